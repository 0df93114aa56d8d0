"""Each pre-training task's loss at initialisation, per stage of a curriculum: how the losses' magnitudes
compare before `model.loss_weights` mixes them.

    python benchmarks/loss_scales.py                          # msp_paper.yaml on the synthetic world
    python benchmarks/loss_scales.py --config recipes/configs/synthetic.yaml --batches 8

The model is the curriculum's (`model:`, at the paper's size for msp_paper.yaml), freshly initialised; the
data is the curriculum's stages on a prepared folder, by default the synthetic world with 2,048-d ReLU
features (the format of bottom-up-attention features). Prints the features' statistics, then per stage and
task the mean loss over the batches, the configured weight and the weighted loss.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.training.curriculum import load_curriculum
from lxmert_s_msp.training.sampling import IndexedRows
from lxmert_s_msp.training.stage_data import PretrainingData, stage_data
from modeling_lxmert_s import LxmertSConfig, LxmertSForPreTraining

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "msp_paper.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="default: %(default)s")
    parser.add_argument(
        "--data-dir", type=Path, help="a prepared data folder (default: the synthetic world in --world)"
    )
    parser.add_argument("--world", type=Path, default=Path("outputs/loss-scales-world"))
    parser.add_argument("--tokenizer", help="default: the curriculum's, else the data folder's")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    folder = args.data_dir or generate_world(args.world, WorldSettings())
    curriculum = load_curriculum(args.config, folder)
    data = PretrainingData.open(folder, args.tokenizer or curriculum.data.tokenizer)
    features = np.asarray(data.store.features[:256], dtype=np.float32)
    print(
        f"features {data.store.feature_dim}-d: mean {features.mean():.3f}, zero {np.mean(features == 0):.1%},"
        f" squared L2 per region {np.mean((features**2).sum(-1)):.0f}"
    )
    print(f"{'stage':>10} {'task':>8} {'loss':>10} {'weight':>8} {'weighted':>10}")
    for index, stage in enumerate(curriculum.stages):
        torch.manual_seed(args.seed)
        settings = {**curriculum.model, **data.model_sizes(), "pretraining_tasks": stage.tasks}
        model = LxmertSForPreTraining(LxmertSConfig(**settings)).eval()
        trained = stage_data(data, stage, curriculum.training, seed=args.seed + index)
        rows = IndexedRows(trained.dataset.shuffle(seed=args.seed))  # with what seeds a batch, as in training
        losses: dict[str, list[float]] = {}
        for batch in range(args.batches):
            start = batch * args.batch_size
            keys = [(0, i) for i in range(start, start + args.batch_size)]
            output = model(**trained.collator(rows.__getitems__(keys)))
            for task, value in output.losses.items():
                losses.setdefault(task, []).append(value.item())
        for task, values in losses.items():
            weight = model.config.loss_weight(task)
            mean = float(np.mean(values))
            print(f"{stage.name:>10} {task:>8} {mean:10.4g} {weight:8.3g} {weight * mean:10.4g}")


if __name__ == "__main__":
    main()
