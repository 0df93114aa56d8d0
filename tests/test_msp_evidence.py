"""`experiments/msp_evidence.py`: every condition pre-trained, fine-tuned and scored; the table over seeds."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from recipe_modules import load_recipe
from tiny_curriculum import ALIGNMENT_STAGE, tiny_stages, write_tiny_curriculum

REPO = Path(__file__).resolve().parents[1]
evidence = load_recipe("msp_evidence", "experiments")


def write_curricula(folder: Path) -> list[str]:
    """Tiny stand-ins for the four curricula: S and T→P→S with the paper's tasks, then with alignment."""
    paper = tiny_stages(epochs=(1, 1, 1))
    conditions = {
        "s": (paper[2:], {}),
        "tps": (paper, {}),
        "s-align": ([ALIGNMENT_STAGE], {"pooler_type": "alignment"}),
        "tps-align": ([*paper[:2], ALIGNMENT_STAGE], {"pooler_type": "alignment"}),
    }
    paths = []
    for name, (stages, model) in conditions.items():
        (folder / name).mkdir()
        paths.append(str(write_tiny_curriculum(folder / name, stages, model=model)))
    return paths


def test_every_condition_is_pretrained_finetuned_and_scored_once(tmp_path):
    out = tmp_path / "evidence"
    arguments = [
        "--seeds",
        "0",
        "--output-dir",
        str(out),
        "--curricula",
        *write_curricula(tmp_path),
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
    rows = {line.split(" | ")[0].removeprefix("| "): line.split(" | ")[1:] for line in table.splitlines()[2:]}
    assert list(rows) == ["none", "S", "T→P→S", "S + align", "T→P→S + align"]
    titles = table.splitlines()[0].split(" | ")[1:]
    zero_shot = [index for index, title in enumerate(titles) if title.startswith("ZS")]
    contrastive = [index for index, title in enumerate(titles) if "VSC" in title or "re-ranked" in title]
    assert len(zero_shot) == 7 and len(contrastive) == 4
    # no zero-shot score without pre-training; no contrastive ranking without the VSC head
    assert [index for index, cell in enumerate(rows["none"]) if "—" in cell] == zero_shot
    for paper_tasks in ("S", "T→P→S"):
        assert [index for index, cell in enumerate(rows[paper_tasks]) if "—" in cell] == contrastive
    assert not any("—" in cell for cell in rows["S + align"] + rows["T→P→S + align"])
    seed = out / "seed0"
    for tag in ("none", "S", "TPS", "S-align", "TPS-align"):
        for task in ("vqa", "nlvr2", "retrieval"):
            metrics = json.loads((seed / f"{tag}-{task}.json").read_text())
            assert all(0 <= value <= 1 for name, value in metrics.items() if not name.startswith("kept_"))
            report = json.loads((seed / f"{tag}-{task}" / "metrics.json").read_text())
            assert (report["learning_rate"], report["head_learning_rate"]) == (2e-4, 3e-4)
        # fine-tuned retrieval is scored by ITM on every pair, whatever the heads
        assert "all_pairs_image_r1" not in json.loads((seed / f"{tag}-retrieval.json").read_text())
    assert "contrastive_image_r1" in json.loads((seed / "TPS-align-retrieval.json").read_text())
    zero_shot_scores = json.loads((seed / "TPS-align-zero_shot.json").read_text())
    assert {"itm_accuracy", "contrastive_text_r1", "reranked_text_r1", "all_pairs_text_r1"} <= set(
        zero_shot_scores
    )
    # the S conditions pre-trained only the sentence stage, the T→P→S ones all three
    for tag, stages in (("S", 1), ("TPS", 3), ("S-align", 1), ("TPS-align", 3)):
        assert len([p for p in (seed / f"pretrain-{tag}").glob("[0-9]-*") if p.is_dir()]) == stages
    assert (out / "results.md").read_text().endswith(table + "\n")
    assert "learning rate 0.0002 (new heads 0.0003)" in (out / "results.md").read_text()

    stamps = {path: path.stat().st_mtime_ns for path in seed.glob("*.json")}
    assert evidence.main(arguments) == table  # a re-run reads the finished results
    assert {path: path.stat().st_mtime_ns for path in seed.glob("*.json")} == stamps


def test_the_table_is_mean_and_std_over_seeds_in_percent():
    def scores(vqa: float) -> dict:
        recalls = {f"{kind}_r{k}": 0.5 for kind in ("image", "text") for k in (1, 5, 10)}
        return {"vqa": {"vqa_accuracy": vqa}, "nlvr2": {"accuracy": 0.5}, "retrieval": recalls}

    zero_shot = {"itm_accuracy": 0.9, "contrastive_image_r1": 0.1, "reranked_image_r1": 0.3}
    per_seed = {
        seed: {
            "none": scores(vqa),
            "S": scores(vqa),
            "T→P→S": scores(vqa),
            "S + align": scores(vqa),
            "T→P→S + align": {**scores(vqa), "zero_shot": zero_shot | {"all_pairs_text_r1": text}},
        }
        for seed, vqa, text in ((0, 0.40, 0.2), (1, 0.50, 0.3), (2, 0.66, 0.4))
    }
    table = evidence.results_table(per_seed)
    header = table.splitlines()[0].split(" | ")
    row = next(line for line in table.splitlines() if line.startswith("| T→P→S + align |")).split(" | ")
    cell = dict(zip(header, row, strict=True))
    mean, std = statistics.mean([40, 50, 66]), statistics.stdev([40, 50, 66])
    assert cell["VQA acc"] == f"{mean:.1f} ± {std:.1f}" == "52.0 ± 13.1"
    assert cell["ZS ITM acc"] == "90.0 ± 0.0"
    assert (cell["ZS IR R@1 VSC"], cell["ZS IR R@1 re-ranked"]) == ("10.0 ± 0.0", "30.0 ± 0.0")
    assert cell["ZS TR R@1 ITM"] == "30.0 ± 10.0"
    assert cell["ZS IR R@1 ITM"] == "—"  # a score no seed has
    assert cell["IR R@1"] == "50.0 ± 0.0"


def test_bad_epoch_overrides_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="TASK=N"):
        evidence.main(["--output-dir", str(tmp_path), "--epochs", "gqa=3"])
