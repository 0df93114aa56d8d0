"""Table 4 on the built-in world: the rows made from the default curriculum, the equal-steps protocol, and
`experiments/table4.py` pre-training, scoring and tabulating them (`lxmert_s_msp.evidence.table4`)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from recipe_modules import load_recipe
from tiny_curriculum import ALIGNMENT_STAGE, tiny_stages, write_tiny_curriculum

from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.evidence.table4 import (
    DEFAULT_TASKS,
    PAPER_TASKS,
    PROTOCOLS,
    ROWS,
    RowCurriculum,
    stage_steps,
    table_markdown,
    write_row_curricula,
)
from lxmert_s_msp.training.curriculum import load_curriculum
from lxmert_s_msp.training.stage_data import PretrainingData

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"
table4 = load_recipe("table4", "experiments")


@pytest.fixture(scope="module")
def world_data(tmp_path_factory) -> PretrainingData:
    folder = tmp_path_factory.mktemp("table4") / "world"
    return PretrainingData.open(generate_world(folder, WorldSettings(images=120, feature_dim=16)))


def test_the_rows_of_the_default_curriculum_are_the_papers(world_data, tmp_path):
    bases = {DEFAULT_TASKS: CONFIGS / "synthetic.yaml", PAPER_TASKS: CONFIGS / "synthetic_paper_tasks.yaml"}
    written = write_row_curricula(list(ROWS), PROTOCOLS, bases, world_data, tmp_path)
    stages = {row.condition: load_curriculum(row.path).stages for row in written}
    default = {stage.name: stage for stage in load_curriculum(bases[DEFAULT_TASKS]).stages}
    budget = sum(stage_steps(stage, world_data) for stage in default.values())

    def names(condition: str) -> list[str]:
        return [stage.name for stage in stages[condition]]

    def tasks(condition: str) -> set[str]:
        return {task for stage in stages[condition] for task in stage.tasks}

    for name, row in ROWS.items():
        expected = ["mixed"] if row.mixed else list(row.order)
        assert names(f"{name}-paper") == expected, name
        # the paper's protocol keeps the base's schedule; equal steps give every row T→P→S's steps
        paper_steps = [stage_steps(stage, world_data) for stage in stages[f"{name}-paper"]]
        assert all(stage.max_steps is None for stage in stages[f"{name}-paper"])
        if sum(paper_steps) == budget:
            assert f"{name}-equal_steps" not in stages, name
        else:
            scaled = [stage.max_steps for stage in stages[f"{name}-equal_steps"]]
            assert sum(scaled) == budget, name
            shares = [steps / sum(paper_steps) * budget for steps in paper_steps]
            assert all(abs(steps - share) <= 1 for steps, share in zip(scaled, shares, strict=True)), name
    for name in ("t_p_s", "s_p_t", "p_t_s", "t_p_s_no_titp", "t_p_s_paper_tasks"):
        assert f"{name}-equal_steps" not in stages
    assert stages["s-paper"][0] == default["sentence"]
    assert [stage.tasks for stage in stages["t_p_s-paper"]] == [stage.tasks for stage in default.values()]
    # the task rows: the paper's removals, ITM_VSC in ITM_HS's place on the default's task lists
    assert tasks("s-paper") - tasks("s_no_itm_hs-paper") == {"itm_vsc"}
    assert tasks("s-paper") - tasks("s_no_itm_hs_tits-paper") == {"itm_vsc", "tits"}
    assert stages["s_itm-paper"][0].tasks == ["mlm", "mrfr", "moc", "itm"]
    assert tasks("t_s-paper") - tasks("t_s_no_ifrs-paper") == {"ifrs"}
    assert tasks("p_s-paper") - tasks("p_s_no_titp-paper") == {"titp"}
    assert tasks("t_p_s-paper") - tasks("t_p_s_no_titp-paper") == {"titp"}
    assert "vsc" not in tasks("t_p_s_paper_tasks-paper") and "itm_hs" in tasks("t_p_s_paper_tasks-paper")
    mixed = stages["tps_mixed-paper"][0]
    assert [(source.corpus, source.tasks) for source in mixed.sources] == [
        (stage.sources[0].corpus, stage.sources[0].tasks) for stage in default.values()
    ]
    assert (mixed.epochs, mixed.max_length) == (default["sentence"].epochs, 38)


def tiny_bases(folder: Path) -> list[str]:
    """A tiny default (the alignment tasks in the sentence stage) and a tiny paper-tasks curriculum."""
    paper = tiny_stages(epochs=(1, 1, 1))
    (folder / "default").mkdir()
    (folder / "paper").mkdir()
    default = write_tiny_curriculum(folder / "default", [*paper[:2], ALIGNMENT_STAGE])
    return ["--base", str(default), "--paper-tasks-base", str(write_tiny_curriculum(folder / "paper", paper))]


def test_table4_pretrains_scores_and_tabulates_each_row_at_each_caption_fraction(tmp_path):
    out = tmp_path / "table4"
    arguments = [
        *("--output-dir", str(out), "--seeds", "0", "--rows", "s", "t_p_s"),
        *("--caption-fractions", "0.5", "1", "--downstream", "vqa"),
        *("--world-images", "40", "--world-feature-dim", "32", "--max-steps", "2"),
        *tiny_bases(tmp_path),
    ]
    text = table4.main(arguments)

    settings = json.loads((out / "settings.json").read_text())
    assert settings["world_images"] == 40
    assert settings["finetune_epochs"] == {"vqa": 24, "retrieval": 1}  # the cpu preset's
    captions = []
    for fraction in ("0.5", "1"):
        folder = out / f"captions-{fraction}"
        world = folder / "world"
        assert json.loads((world / "world.json").read_text())["caption_fraction"] == float(fraction)
        captions.append(len(datasets.load_from_disk(str(world / "corpora" / "captions"))))
        seed = folder / "seed0"
        # every run trained the steps its curriculum file and the table say; S at equal steps as T→P→S
        trained = {}
        for condition in ("s-paper", "s-equal_steps", "t_p_s-paper"):
            finals = sorted((seed / f"pretrain-{condition}").glob("[0-9]-*/final/trainer_state.json"))
            trained[condition] = [json.loads(path.read_text())["global_step"] for path in finals]
            header = (folder / "curricula" / f"{condition}.yaml").read_text().splitlines()[0]
            assert header.endswith(f": {sum(trained[condition])} optimizer steps"), condition
        assert len(trained["t_p_s-paper"]) == 3 and len(trained["s-paper"]) == 1
        assert sum(trained["s-equal_steps"]) == sum(trained["t_p_s-paper"]) > sum(trained["s-paper"])
        assert not (folder / "curricula" / "t_p_s-equal_steps.yaml").exists()
        for condition in ("none", "s-paper", "s-equal_steps", "t_p_s-paper"):
            assert 0 <= json.loads((seed / f"{condition}-vqa.json").read_text())["vqa_accuracy"] <= 1
        assert (out / f"table4-captions-{fraction}.png").stat().st_size > 0
        section = text.split(f"## Captions for {100 * float(fraction):g}%")[1].split("## ")[0]
        rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ")][2:]
        steps = {tuple(cells[:2]): cells[2] for cells in rows}
        assert steps == {
            ("|", "none"): "0",
            ("| paper", "S"): str(sum(trained["s-paper"])),
            ("| paper", "T→P→S"): str(sum(trained["t_p_s-paper"])),
            ("| equal steps", "S"): str(sum(trained["s-equal_steps"])),
            ("| equal steps", "T→P→S"): f"{sum(trained['t_p_s-paper'])} (as paper)",
        }
    assert captions[0] < captions[1]
    assert (out / "caption_fractions.png").stat().st_size > 0
    assert (out / "table4.md").read_text() == text
    # a re-run with other fine-tuning settings would reuse results they did not make: refused
    with pytest.raises(SystemExit, match="finetune_epochs"):
        table4.main([*arguments, "--epochs", "vqa=3"])


def test_the_table_gives_each_protocol_its_rows_and_a_row_equal_steps_leave_as_it_is_in_both():
    curricula = [
        table4_row("s", "paper", [10]),
        table4_row("s", "equal_steps", [30]),
        table4_row("t_p_s", "paper", [5, 10, 15]),
    ]

    def scores(vqa: float) -> dict:
        return {
            "vqa": {"vqa_accuracy": vqa},
            "zero_shot": {f"all_pairs_image_r{k}": 0.1 * k for k in (1, 5, 10)},
        }

    per_seed = [
        {
            "none": scores(0.2),
            "s-paper": scores(0.4),
            "s-equal_steps": scores(0.5),
            "t_p_s-paper": scores(vqa),
        }
        for vqa in (0.6, 0.7)
    ]
    lines = table_markdown(per_seed, curricula).splitlines()
    header = lines[0].split(" | ")
    rows = {}
    for line in lines[2:]:
        cells = line.split(" | ")
        rows[(cells[0].removeprefix("| "), cells[1])] = dict(zip(header, cells, strict=True))
    assert list(rows) == [
        ("|", "none"),
        ("paper", "S"),
        ("paper", "T→P→S"),
        ("equal steps", "S"),
        ("equal steps", "T→P→S"),
    ]
    assert rows[("equal steps", "T→P→S")]["steps"] == "30 (as paper)"
    assert rows[("equal steps", "T→P→S")]["VQA"] == rows[("paper", "T→P→S")]["VQA"] == "65.0 ± 7.1"
    assert rows[("equal steps", "S")]["VQA"] == "50.0 ± 0.0"
    assert rows[("paper", "S")]["ZS IR"] == "53.3 ± 0.0"  # the mean of R@1, 5, 10
    assert rows[("paper", "S")]["NLVR2"] == "—"  # a task not run
    assert rows[("|", "none")]["VQA"] == "20.0 ± 0.0"


def table4_row(row: str, protocol: str, steps: list[int]) -> RowCurriculum:
    return RowCurriculum(row, protocol, Path(f"{row}-{protocol}.yaml"), steps)
