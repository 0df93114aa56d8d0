"""Pre-train LXMERT-S with an MSP curriculum; with no arguments, T→P→S on the built-in synthetic world.

    accelerate launch recipes/pretrain.py
    accelerate launch recipes/pretrain.py --config recipes/configs/msp_paper.yaml --data-dir /data/lxmert
    accelerate launch --multi_gpu --num_processes 8 recipes/pretrain.py --config ...

Re-running a command resumes it. At the end it prints where the Hub-ready folder and the loss plot are and,
when the last stage trains ITM and the data has a Flickr30k-style retrieval corpus, scores on its test split
with no fine-tuning, in percent with the chance level beside each: held-out ITM accuracy (every caption with
its image and with another) and zero-shot retrieval recall. A model with the VSC head ranks by the
contrastive similarity of its embeddings (no cross-modal pass), then re-ranks the top --rerank-top-k by ITM
(the cross-modal encoder); with --all-pairs it is also ranked by ITM on every pair (the paper's protocol) to
show how much of that recall the re-ranking keeps. A model without VSC is ranked by ITM on every pair. The
model card (<output-dir>/hub/README.md) records the same scores. --push_to_hub then uploads that folder
(only that folder) to --hub_model_id.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lxmert_s_training.curriculum import load_curriculum
from lxmert_s_training.hub_upload import add_push_arguments, hub_upload, push_folder
from lxmert_s_training.launch import distributed_state
from lxmert_s_training.pretraining import run_curriculum
from lxmert_s_training.retrieval import DEFAULT_RERANK_TOP_K
from lxmert_s_training.zero_shot import ZeroShotSettings

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
        "--overwrite_output_dir",
        action="store_true",
        help="train again the stages whose folder holds results of other settings (by default such a run is "
        "refused, naming what changed; the same settings resume)",
    )
    parser.add_argument(
        "--retrieval-split", default="test", help="split of corpora/flickr30k for the zero-shot scores"
    )
    parser.add_argument(
        "--rerank-top-k",
        type=int,
        default=DEFAULT_RERANK_TOP_K,
        metavar="K",
        help="zero-shot retrieval of a model with VSC: candidates per query re-ranked by ITM (default: "
        "%(default)s; 0: no re-ranking)",
    )
    parser.add_argument(
        "--all-pairs",
        action="store_true",
        help="zero-shot retrieval of a model with VSC: also rank by ITM on every pair (slow: every image "
        "with every caption through the cross-modal encoder)",
    )
    add_push_arguments(parser)
    args = parser.parse_args(argv)
    if args.rerank_top_k < 0:
        parser.error(
            f"--rerank-top-k: expected 0 (no re-ranking) or more candidates, got {args.rerank_top_k}"
        )
    args.hub_upload = hub_upload(parser, args, args.output_dir)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    state = distributed_state()
    curriculum = load_curriculum(args.config, args.data_dir)
    result = run_curriculum(
        curriculum,
        args.output_dir,
        ZeroShotSettings(args.retrieval_split, args.rerank_top_k, args.all_pairs),
        overwrite_output_dir=args.overwrite_output_dir,
    )
    if not state.is_main_process:
        return
    print(f"Hub-ready folder: {result.hub_folder}")
    if result.plot is not None:
        print(f"Loss curves:      {result.plot}")
    print(result.zero_shot.summary())
    if args.hub_upload is not None:
        message = f"LXMERT-S pre-trained with the {curriculum.path.name} curriculum"
        print(f"Pushed to the Hub: {push_folder(result.hub_folder, args.hub_upload, message)}")


if __name__ == "__main__":
    main()
