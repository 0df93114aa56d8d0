"""Pre-train LXMERT-S with an MSP curriculum; with no arguments, T→P→S on the built-in synthetic world.

    accelerate launch recipes/pretrain.py
    accelerate launch recipes/pretrain.py --config recipes/configs/msp_paper.yaml --data-dir /data/lxmert
    accelerate launch --multi_gpu --num_processes 8 recipes/pretrain.py --config ...

Re-running a command resumes it. At the end it prints where the Hub-ready folder and the loss plot are and,
when the data has a Flickr30k-style retrieval corpus, the zero-shot retrieval recall on its test split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_lxmert_s import head_module_name
from training.curriculum import load_curriculum
from training.launch import distributed_state
from training.pretraining import run_curriculum
from training.retrieval import zero_shot_retrieval

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "synthetic.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="curriculum YAML (default: %(default)s)"
    )
    parser.add_argument("--data-dir", type=Path, help="a prepared data folder, replacing the config's data")
    parser.add_argument(
        "--output-dir", type=Path, default=Path("outputs/pretrain"), help="default: %(default)s"
    )
    parser.add_argument(
        "--retrieval-split", default="test", help="split of corpora/flickr30k for the zero-shot score"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    state = distributed_state()
    curriculum = load_curriculum(args.config, args.data_dir)
    result = run_curriculum(curriculum, args.output_dir)
    if not state.is_main_process:
        return
    print(f"Hub-ready folder: {result.hub_folder}")
    print(f"Loss curves:      {result.plot}")
    if "itm" not in map(head_module_name, curriculum.stages[-1].tasks):
        print("Zero-shot retrieval: skipped, the last stage trains no ITM head to score pairs with")
    elif not (result.data_folder / "corpora" / "flickr30k").is_dir():
        print(f"Zero-shot retrieval: skipped, {result.data_folder} has no corpora/flickr30k")
    else:
        retrieval = zero_shot_retrieval(result.hub_folder, result.data_folder, args.retrieval_split)
        print(retrieval.summary())


if __name__ == "__main__":
    main()
