"""Import pre-extracted region features into one store: `python -m lxmert_s_msp.data.features import OUT_STORE
INPUT...`, each input an obj36 TSV file, a `.npz` file or a folder of `.npz` files (the formats:
`lxmert_s_msp.data.readers`; the importer: `lxmert_s_msp.data.feature_import`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lxmert_s_msp.cli import accept_underscores, run
from lxmert_s_msp.data.feature_import import ImportSettings, import_features

DESCRIPTION = "Readers for pre-extracted region features, and the importer that turns them into one store."


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lxmert_s_msp.data.features", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    importer = commands.add_parser("import", help="import obj36 TSV files / .npz folders into one store")
    importer.add_argument("out_store", type=Path)
    importer.add_argument("inputs", type=Path, nargs="+", help="obj36 .tsv files, .npz files or .npz folders")
    importer.add_argument("--num-regions", type=int, default=36)
    importer.add_argument("--feature-dim", type=int, default=2048)
    importer.add_argument("--truncate", action="store_true", help="keep the first regions of larger images")
    importer.add_argument("--skip-bad-rows", action="store_true", help="skip and count corrupt rows")
    importer.add_argument("--allow-pickle", action="store_true", help="read labels from pickled .npz 'info'")
    args = accept_underscores(parser).parse_args(argv)
    settings = ImportSettings(
        num_regions=args.num_regions,
        feature_dim=args.feature_dim,
        truncate=args.truncate,
        skip_bad_rows=args.skip_bad_rows,
        allow_pickle=args.allow_pickle,
    )
    try:
        report = import_features(args.out_store, args.inputs, settings)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(1, f"error: {error}\nfix the input and re-run: finished inputs are not converted again\n")
    skipped = sum(report.skipped_rows.values())
    print(f"imported {len(report.store)} images into {report.store.path}", file=sys.stderr)
    if skipped:
        per_input = ", ".join(f"{source}: {count}" for source, count in report.skipped_rows.items() if count)
        print(f"skipped {skipped} corrupt rows ({per_input})", file=sys.stderr)


if __name__ == "__main__":
    run(main)
