"""Convert a transformers LXMERT checkpoint into a Hub-ready LXMERT-S folder.

    python recipes/convert_lxmert_checkpoint.py unc-nlp/lxmert-base-uncased out/lxmert-s-from-lxmert

The input is anything `LxmertForPreTraining.from_pretrained` reads (a local folder or a Hub name).
The output carries config (LXMERT-compatible setting), safetensors weights and the modeling code, so
`AutoModelForPreTraining.from_pretrained(out, trust_remote_code=True)` loads it without this package.
LXMERT's language and object-relationship encoders and its QA head are dropped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transformers import LxmertForPreTraining

from modeling_lxmert_s import LxmertSConfig, LxmertSForPreTraining, convert_lxmert_state_dict


def convert_checkpoint(source: str, output_dir: Path) -> LxmertSForPreTraining:
    lxmert = LxmertForPreTraining.from_pretrained(source)
    flags = lxmert.config
    tasks = ["mlm"] if flags.task_mask_lm else []
    tasks += ["mrfr", "moc"] if flags.task_obj_predict else []
    tasks += ["itm"] if flags.task_matched else []
    config = LxmertSConfig.from_lxmert_config(lxmert.config, pretraining_tasks=tasks)
    model = LxmertSForPreTraining(config)
    try:
        model.load_state_dict(convert_lxmert_state_dict(lxmert.state_dict()))
    except RuntimeError as error:
        raise ValueError(f"{source}: weights did not map onto LXMERT-S: {error}") from error
    model.save_pretrained(output_dir)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", help="LXMERT checkpoint: a local folder or a Hub name")
    parser.add_argument("output_dir", type=Path, help="where the Hub-ready LXMERT-S folder is written")
    args = parser.parse_args()
    convert_checkpoint(args.source, args.output_dir)
    print(f"wrote {args.output_dir}")


if __name__ == "__main__":
    main()
