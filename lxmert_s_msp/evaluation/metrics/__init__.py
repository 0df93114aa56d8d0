"""Downstream metrics (VQA accuracy, retrieval Recall@K, plain accuracy) shipped as local `evaluate` modules.

`evaluate.load("accuracy")` downloads its script from the Hub at run time, which fails on offline training
nodes and lets the scoring code change under a fixed checkpoint. Each metric here is a folder holding one
script of the same name, loaded by absolute path, so scoring needs no network and is versioned with the repo.
"""

from pathlib import Path

import evaluate

METRIC_NAMES = ("accuracy", "retrieval_recall", "vqa_accuracy")


def load_metric(name: str) -> evaluate.EvaluationModule:
    """The local metric `name` (one of `METRIC_NAMES`), loaded without any download."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; choose one of {list(METRIC_NAMES)}")
    return evaluate.load(str(Path(__file__).resolve().parent / name))
