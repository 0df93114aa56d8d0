"""A curriculum small enough for tests: a 40-image synthetic world, a one-layer model, every stage."""

from __future__ import annotations

from pathlib import Path

import yaml

TINY_MODEL = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "num_layers": 1}
TINY_WORLD = {"images": 40, "feature_dim": 32, "seed": 0}


def tiny_stages(epochs: tuple[float, float, float] = (2, 2, 1), batch_size: int = 8) -> list[dict]:
    corpora = [  # the world's 36 labels are 38 tokens
        ("token", "tokens", ["mlm", "mrfr", "moc", "ifrs"], 38),
        ("phrase", "phrases", ["mlm", "mrfr", "moc", "titp"], 20),
        ("sentence", "captions", ["mlm", "mrfr", "moc", "itm_hs", "tits"], 20),
    ]
    return [
        {
            "name": name,
            "corpus": corpus,
            "tasks": tasks,
            "max_length": max_length,
            "epochs": stage_epochs,
            "batch_size": batch_size,
            "learning_rate": 1e-3,
        }
        for (name, corpus, tasks, max_length), stage_epochs in zip(corpora, epochs, strict=True)
    ]


# One epoch of detector labels, then of phrases, with the losses every stage shares and the phrase stage's
# TITP: a two-stage curriculum for the tests of what a re-run does.
ONE_EPOCH_TOKEN = {
    "name": "token",
    "corpus": "tokens",
    "tasks": ["mlm", "mrfr", "moc"],
    "max_length": 38,
    "epochs": 1,
    "batch_size": 8,
    "learning_rate": 1e-3,
}
ONE_EPOCH_PHRASE = {
    **ONE_EPOCH_TOKEN,
    "name": "phrase",
    "corpus": "phrases",
    "tasks": ["mlm", "mrfr", "moc", "titp"],
    "max_length": 20,
}


# A sentence stage with the alignment tasks (VSC, WPG, ITM on negatives mined with VSC): its model has both
# the contrastive path and the ITM head.
ALIGNMENT_STAGE = {
    "name": "sentence",
    "corpus": "captions",
    "tasks": ["mlm", "mrfr", "moc", "vsc", "wpg", "itm_vsc"],
    "max_length": 20,
    "epochs": 1,
    "batch_size": 8,
    "learning_rate": 1e-3,
}


def write_tiny_curriculum(
    folder: Path,
    stages: list[dict] | None = None,
    data: dict | None = None,
    model: dict | None = None,
    **training,
) -> Path:
    """Write `curriculum.yaml` into `folder`; `model` and `training` entries override the test defaults."""
    curriculum = {
        "data": data or {"synthetic": TINY_WORLD},
        "model": {**TINY_MODEL, **(model or {})},
        "training": {"report_to": ["none"], "logging_steps": 1, "save_steps": 4, **training},
        "stages": stages or tiny_stages(),
    }
    path = folder / "curriculum.yaml"
    path.write_text(yaml.safe_dump(curriculum))
    return path
