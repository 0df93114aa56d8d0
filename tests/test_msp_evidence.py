"""`recipes/msp_evidence.py`: every condition pre-trained, fine-tuned and scored; the table over seeds."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest
from tiny_curriculum import tiny_stages, write_tiny_curriculum

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("recipe_msp_evidence", REPO / "recipes" / "msp_evidence.py")
evidence = importlib.util.module_from_spec(spec)
spec.loader.exec_module(evidence)


def test_every_condition_is_pretrained_finetuned_and_scored_once(tmp_path):
    curricula = []
    for name, stages in (("s", tiny_stages(epochs=(1, 1, 1))[2:]), ("tps", tiny_stages(epochs=(1, 1, 1)))):
        folder = tmp_path / name
        folder.mkdir()
        curricula.append(str(write_tiny_curriculum(folder, stages)))
    out = tmp_path / "evidence"
    arguments = [
        "--seeds",
        "0",
        "--output-dir",
        str(out),
        "--curricula",
        *curricula,
        "--world-images",
        "40",
        "--world-feature-dim",
        "32",
        "--max-steps",
        "2",
        "--learning-rate",
        "2e-4",
        "--head-learning-rate",
        "3e-4",
    ]
    table = evidence.main(arguments)
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in table.splitlines()[2:]}
    assert list(rows) == ["none", "S", "T→P→S"]
    assert rows["none"].count("—") == 6  # no zero-shot score without pre-training
    assert "—" not in rows["S"] and "—" not in rows["T→P→S"]
    seed = out / "seed0"
    for tag in ("none", "S", "TPS"):
        for task in ("vqa", "nlvr2", "retrieval"):
            metrics = json.loads((seed / f"{tag}-{task}.json").read_text())
            assert all(0 <= value <= 1 for value in metrics.values()), (tag, task)
            report = json.loads((seed / f"{tag}-{task}" / "metrics.json").read_text())
            assert (report["learning_rate"], report["head_learning_rate"]) == (2e-4, 3e-4)
    # the S condition pre-trained only the sentence stage, T→P→S all three
    assert sorted(p.name for p in (seed / "pretrain-S").glob("*-*") if p.is_dir()) == ["1-sentence"]
    assert len([p for p in (seed / "pretrain-TPS").glob("[0-9]-*") if p.is_dir()]) == 3
    assert (out / "results.md").read_text().endswith(table + "\n")
    assert "learning rate 0.0002 (new heads 0.0003)" in (out / "results.md").read_text()

    stamps = {path: path.stat().st_mtime_ns for path in seed.glob("*.json")}
    assert evidence.main(arguments) == table  # a re-run reads the finished results
    assert {path: path.stat().st_mtime_ns for path in seed.glob("*.json")} == stamps


ZERO_SHOT = ("image_r1", "image_r5", "image_r10", "text_r1", "text_r5", "text_r10")


def test_the_table_is_mean_and_std_over_seeds_in_percent():
    def scores(vqa: float) -> dict:
        recalls = {f"{kind}_r{k}": 0.5 for kind in ("image", "text") for k in (1, 5, 10)}
        return {"vqa": {"vqa_accuracy": vqa}, "nlvr2": {"accuracy": 0.5}, "retrieval": recalls}

    per_seed = {
        seed: {
            "none": scores(vqa),
            "S": scores(vqa),
            "T→P→S": {
                **scores(vqa),
                "zero_shot": dict(zip(ZERO_SHOT, (0.1, 0.3, 0.4, 0.2, 0.5, 0.6), strict=True)),
            },
        }
        for seed, vqa in ((0, 0.40), (1, 0.50), (2, 0.66))
    }
    table = evidence.results_table(per_seed)
    row = next(line for line in table.splitlines() if line.startswith("| T→P→S |"))
    mean, std = statistics.mean([40, 50, 66]), statistics.stdev([40, 50, 66])
    assert row.split(" | ")[1] == f"{mean:.1f} ± {std:.1f}" == "52.0 ± 13.1"
    assert row.split(" | ")[3:9] == [
        "10.0 ± 0.0",
        "30.0 ± 0.0",
        "40.0 ± 0.0",
        "20.0 ± 0.0",
        "50.0 ± 0.0",
        "60.0 ± 0.0",
    ]


def test_bad_epoch_overrides_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="TASK=N"):
        evidence.main(["--output-dir", str(tmp_path), "--epochs", "gqa=3"])
