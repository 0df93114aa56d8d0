"""Downstream quality after each stage of a curriculum, against the pre-training wall-clock time it took.

    python experiments/msp_stages.py --seeds 0 1 2 --vqa-epochs 3   # T→P→S, mlm vs flm
    python experiments/msp_stages.py --curricula mlm=recipes/configs/synthetic.yaml --seeds 0

For every curriculum (NAME=CONFIG; default `mlm` = configs/synthetic.yaml and `flm` = the same curriculum with
free language modeling, configs/synthetic_flm.yaml) and seed: pre-train it; after each stage, take the
cumulative pre-training time (the Trainer's `train_runtime` of the stages so far, as measured when they
ran), fine-tune VQA from the stage's model and score its test split, score zero-shot retrieval on the
test split when the stage has the ITM head, and measure how much a word that names an object looks at that
object's regions (`lxmert_s_msp.evidence.grounding`; 1 = no more than uniform attention). For the first
curriculum and seed, also draw the paper's Fig. 3 (top-3 answers after each stage) and Fig. 4 (top-1
retrieved caption after each stage, from a retrieval model fine-tuned from each stage).

Output (a re-run skips what is finished; every result is a json file written when it is done):

    <out>/world/                              the synthetic world all runs share
    <out>/<name>/seed<s>/pretrain/            the curriculum run (recipes/pretrain.py's layout)
    <out>/<name>/seed<s>/<i>-<stage>.json     its time, step time, VQA accuracy and zero-shot R@1
    <out>/<name>/seed<s>/<i>-<stage>-grounding.json   its attention to named regions
    <out>/<name>/seed<s>/<i>-<stage>-vqa/     the VQA model fine-tuned from that stage
    <out>/results.md, <out>/quality_vs_time.png, <out>/fig3_answers.png, <out>/fig4_retrieval.png
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from lxmert_s_msp.data.downstream_data import DownstreamData
from lxmert_s_msp.data.store import atomic_write_text
from lxmert_s_msp.evaluation.downstream import evaluate_checkpoint
from lxmert_s_msp.evidence.grounding import named_region_attention
from lxmert_s_msp.evidence.results import (
    cached_json,
    evidence_parser,
    evidence_world,
    finetune_settings,
    mean_std,
    seeded_curriculum,
)
from lxmert_s_msp.evidence.stage_figures import (
    pick_questions,
    plot_answers,
    plot_captions,
    plot_quality_vs_time,
    scene_descriptions,
    top_answers,
    top_captions,
)
from lxmert_s_msp.training.downstream_tasks import TASKS
from lxmert_s_msp.training.finetuning import finetune
from lxmert_s_msp.training.pretraining import run_curriculum
from lxmert_s_msp.training.stage_results import StageResult
from modeling_lxmert_s import PRETRAINING_TASKS

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
CURRICULA = {"mlm": CONFIGS / "synthetic.yaml", "flm": CONFIGS / "synthetic_flm.yaml"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = evidence_parser(__doc__, "outputs/stages")
    parser.add_argument(
        "--curricula", nargs="+", default=[f"{name}={path}" for name, path in CURRICULA.items()],
        metavar="NAME=CONFIG",
    )  # fmt: skip
    parser.add_argument("--vqa-epochs", type=float, help="default: the paper's (6)")
    parser.add_argument("--figure-examples", type=int, default=4, help="questions / images per figure")
    parser.add_argument("--figure-retrieval-epochs", type=float, default=1.0)
    parser.add_argument(
        "--figures", action=argparse.BooleanOptionalAction, default=True, help="draw Fig. 3 and 4"
    )
    return parser.parse_args(argv)


def curricula(args: argparse.Namespace) -> dict[str, Path]:
    named = {}
    for item in args.curricula:
        name, _, path = item.partition("=")
        if not name or not path:
            raise SystemExit(f"--curricula: expected NAME=CONFIG, got {item!r}")
        named[name] = Path(path)
    return named


def train_runtime(stage: StageResult) -> float:
    """Seconds the stage's training took (the Trainer's summary entry; a resumed stage: its last part)."""
    runtimes = [entry["train_runtime"] for entry in stage.log_history if "train_runtime" in entry]
    if not runtimes:
        raise ValueError(f"{stage.folder}: the log history has no train_runtime; was the stage trained?")
    return runtimes[-1]


def run_seed(
    config: Path, seed: int, out: Path, data: DownstreamData, args: argparse.Namespace
) -> list[dict]:
    """Pre-train, then score each stage; the stages' records in order."""
    curriculum = seeded_curriculum(config, data, seed)
    stages = run_curriculum(curriculum, out / "pretrain").stages
    records, elapsed = [], 0.0
    for index, (stage, config_stage) in enumerate(zip(stages, curriculum.stages, strict=True), start=1):
        runtime = train_runtime(stage)
        elapsed += runtime
        timing = {
            "stage": stage.name,
            "pretrain_seconds": elapsed,
            "steps": stage.global_step,
            "seconds_per_step": runtime / stage.global_step,
        }
        tag = f"{index}-{stage.name}"
        itm = "itm" in {PRETRAINING_TASKS[task].module_name for task in config_stage.tasks}
        score = partial(score_stage, timing, stage.folder, itm, out / f"{tag}-vqa", seed, data, args)
        looks = partial(attention_to_named_regions, stage.folder, data.folder)
        records.append(
            cached_json(out / f"{tag}.json", score) | cached_json(out / f"{tag}-grounding.json", looks)
        )
    return records


def attention_to_named_regions(model: Path, data_folder: Path) -> dict[str, float]:
    """The last layer's attention from a class-naming word to that class's regions, over uniform."""
    measured = named_region_attention(model, data_folder)
    return {"named_region_attention": measured.ratios[-1], "named_region_words": measured.words}


def score_stage(
    timing: dict,
    model: Path,
    itm: bool,
    vqa_dir: Path,
    seed: int,
    data: DownstreamData,
    args: argparse.Namespace,
) -> dict:
    """`timing` plus the test VQA accuracy after fine-tuning from a stage's model, and its zero-shot
    retrieval recalls when it has the ITM head."""
    settings = finetune_settings(args, args.vqa_epochs, seed)
    tuned = finetune(TASKS["vqa"], str(model), data, vqa_dir, settings)
    vqa = evaluate_checkpoint(TASKS["vqa"], tuned.hub_folder, data, "test").metrics
    scores = timing | {"vqa_accuracy": vqa["vqa_accuracy"]}
    if itm:
        recalls = evaluate_checkpoint(TASKS["retrieval"], model, data, "test", zero_shot=True).metrics
        scores |= {f"zero_shot_{name}": value for name, value in recalls.items()}
    return scores


def draw_figures(out: Path, data: DownstreamData, args: argparse.Namespace) -> tuple[Path, Path]:
    """Fig. 3 from the VQA models of one curriculum run's stages; Fig. 4 from retrieval models fine-tuned
    from the same stages."""
    stage_folders = sorted(path for path in (out / "pretrain").glob("[0-9]*-*") if path.is_dir())
    scenes = scene_descriptions(data.folder)
    questions = TASKS["vqa"].data.split(data, "test")
    questions = [questions[p] for p in pick_questions(questions, args.figure_examples)]
    images = TASKS["retrieval"].data.split(data, "test")
    picks = list(range(min(args.figure_examples, len(images))))
    answers, captions = {}, {}
    for folder in stage_folders:
        stage = folder.name.split("-", 1)[1]
        answers[stage] = top_answers(out / f"{folder.name}-vqa" / "hub", data.store, questions)
        retrieval = out / f"{folder.name}-retrieval"
        if not (retrieval / "hub").is_dir():
            settings = finetune_settings(args, args.figure_retrieval_epochs)
            finetune(TASKS["retrieval"], str(folder / "final"), data, retrieval, settings)
        captions[stage] = top_captions(retrieval / "hub", data.store, images, picks)
    return (
        plot_answers(questions, answers, scenes, args.output_dir / "fig3_answers.png"),
        plot_captions([images[p] for p in picks], captions, scenes, args.output_dir / "fig4_retrieval.png"),
    )


COLUMNS = (
    ("pretrain_seconds", "pre-training s", 1, 1),
    ("seconds_per_step", "s / step", 1, 3),
    ("vqa_accuracy", "VQA acc", 100, 1),
    ("zero_shot_image_r1", "ZS IR R@1", 100, 1),
    ("zero_shot_text_r1", "ZS TR R@1", 100, 1),
    ("named_region_attention", "attention on named regions (x uniform)", 1, 2),
)


def results_table(records: dict[str, dict[int, list[dict]]]) -> str:
    """A row per curriculum x stage: mean ± std over seeds of the cumulative time and the scores."""
    lines = [
        "| curriculum | after stage | " + " | ".join(title for _, title, _, _ in COLUMNS) + " |",
        "| --- | --- |" + " ---: |" * len(COLUMNS),
    ]
    for name, per_seed in records.items():
        for position, first in enumerate(next(iter(per_seed.values()))):
            cells = []
            for key, _, scale, digits in COLUMNS:
                values = [scale * seed[position][key] for seed in per_seed.values() if key in seed[position]]
                cells.append(mean_std(values, digits))
            lines.append(f"| {name} | {first['stage']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    named = curricula(args)
    data = evidence_world(args)
    records = {
        name: {
            seed: run_seed(config, seed, args.output_dir / name / f"seed{seed}", data, args)
            for seed in args.seeds
        }
        for name, config in named.items()
    }
    figures = ()
    if args.figures:
        figures = draw_figures(args.output_dir / next(iter(named)) / f"seed{args.seeds[0]}", data, args)
    plot = plot_quality_vs_time(records, args.output_dir / "quality_vs_time.png")
    table = results_table(records)
    settings = (
        f"Seeds {args.seeds}; VQA fine-tuned from each stage for {args.vqa_epochs or 'the paper default, 6'}"
        f" epochs at learning rate {args.learning_rate} (new head {args.head_learning_rate}); test split;"
        " scores in %, times in seconds."
    )
    atomic_write_text(args.output_dir / "results.md", f"{settings}\n\n{table}\n")
    print(f"{table}\n\n{plot}\n" + "\n".join(str(path) for path in figures))
    return table


if __name__ == "__main__":
    main()
