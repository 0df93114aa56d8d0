"""`experiments/msp_stages.py` and `lxmert_s_msp/evidence/stage_figures.py`: stages scored, Fig. 3, 4."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from recipe_modules import load_recipe
from tiny_curriculum import TINY_MODEL, TINY_WORLD, tiny_stages, write_tiny_curriculum

from lxmert_s_msp.data.collators import text_inputs, visual_inputs
from lxmert_s_msp.data.downstream_data import DownstreamData
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.data.tokenizer import load_tokenizer
from lxmert_s_msp.evidence.stage_figures import pick_questions, scene_descriptions, top_answers, top_captions
from lxmert_s_msp.training.downstream_tasks import TASKS
from modeling_lxmert_s import LxmertSConfig, LxmertSForImageTextRetrieval, LxmertSForQuestionAnswering
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor

REPO = Path(__file__).resolve().parents[1]
stages_recipe = load_recipe("msp_stages", "experiments")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> DownstreamData:
    return DownstreamData.open(generate_world(tmp_path_factory.mktemp("world"), WorldSettings(**TINY_WORLD)))


def _saved(model_class, world: DownstreamData, folder: Path, **settings) -> Path:
    processor = LxmertSProcessor(load_tokenizer(world.folder / "tokenizer"))
    config = LxmertSConfig(
        **TINY_MODEL, vocab_size=len(processor.tokenizer), visual_feat_dim=world.store.feature_dim, **settings
    )
    model_class(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_every_stage_is_timed_and_scored_and_the_figures_drawn(tmp_path):
    curricula = []
    for name, objective in (("mlm", "mlm"), ("flm", "flm")):
        stages = tiny_stages(epochs=(1, 1, 1))
        for stage in stages:
            stage["tasks"] = [objective if task == "mlm" else task for task in stage["tasks"]]
        folder = tmp_path / name
        folder.mkdir()
        curricula.append(f"{name}={write_tiny_curriculum(folder, stages)}")
    out = tmp_path / "stages"
    arguments = ["--seeds", "0", "--output-dir", str(out), "--curricula", *curricula]
    arguments += ["--world-images", "40", "--world-feature-dim", "32", "--max-steps", "2"]
    arguments += ["--figure-examples", "2", "--learning-rate", "2e-4", "--head-learning-rate", "3e-4"]
    table = stages_recipe.main(arguments)

    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    assert [(row[0].removeprefix("| "), row[1]) for row in rows] == [
        (name, stage) for name in ("mlm", "flm") for stage in ("token", "phrase", "sentence")
    ]
    for name in ("mlm", "flm"):
        seed = out / name / "seed0"
        stages = ("token", "phrase", "sentence")
        records = [json.loads((seed / f"{i}-{s}.json").read_text()) for i, s in enumerate(stages, 1)]
        runtimes = []
        for index, stage in enumerate(("token", "phrase", "sentence"), start=1):
            state = json.loads(
                (seed / "pretrain" / f"{index}-{stage}" / "final" / "trainer_state.json").read_text()
            )
            runtimes.append(next(e["train_runtime"] for e in state["log_history"] if "train_runtime" in e))
            assert records[index - 1]["steps"] == state["global_step"]
        # the time is cumulative: each stage adds its own training time
        assert [r["pretrain_seconds"] for r in records] == pytest.approx(
            [sum(runtimes[:1]), sum(runtimes[:2]), sum(runtimes)]
        )
        assert all(0 <= r["vqa_accuracy"] <= 1 for r in records)
        grounding = [
            json.loads((seed / f"{i}-{s}-grounding.json").read_text()) for i, s in enumerate(stages, 1)
        ]
        assert all(g["named_region_words"] > 0 and g["named_region_attention"] > 0 for g in grounding)
        # only the sentence stage has the ITM head, so only it is scored zero-shot
        assert ["zero_shot_image_r1" in r for r in records] == [False, False, True]
    for figure in ("fig3_answers.png", "fig4_retrieval.png", "quality_vs_time.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every fine-tuning run takes the given learning rates, and the table says which
    tuned = [*out.glob("*/seed0/*-vqa/metrics.json"), *out.glob("*/seed0/*-retrieval/metrics.json")]
    assert len(tuned) == 9
    reports = [json.loads(path.read_text()) for path in tuned]
    assert {(report["learning_rate"], report["head_learning_rate"]) for report in reports} == {(2e-4, 3e-4)}
    assert "at learning rate 0.0002 (new head 0.0003)" in (out / "results.md").read_text()
    # the figures' retrieval models are fine-tuned from each stage of the first curriculum's first seed
    assert sorted(p.name for p in (out / "mlm" / "seed0").glob("*-retrieval")) == [
        "1-token-retrieval", "2-phrase-retrieval", "3-sentence-retrieval"
    ]  # fmt: skip

    stamps = {path: path.stat().st_mtime_ns for path in [*out.glob("*/seed0/*.json"), *out.glob("fig*.png")]}
    # a re-run reads the finished results; without figures it leaves them as they are
    assert stages_recipe.main([*arguments, "--no-figures"]) == table
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps


def test_pick_questions_takes_the_first_of_each_kind(world):
    rows = TASKS["vqa"].data.split(world, "train")
    picked = pick_questions(rows, 3)
    kinds = [" ".join(rows[p]["question"].split()[:2]) for p in picked]
    assert len(set(kinds)) == 3
    for position, kind in zip(picked, kinds, strict=True):
        earlier = [" ".join(q.split()[:2]) for q in rows["question"][:position]]
        assert kind not in earlier


def test_top_answers_are_the_highest_sigmoid_scores_and_marked_right_by_the_soft_scores(world, tmp_path):
    answers = TASKS["vqa"].data.labels(world)
    folder = _saved(
        LxmertSForQuestionAnswering,
        world,
        tmp_path / "vqa",
        num_qa_labels=len(answers),
        id2label=dict(enumerate(answers)),
    )
    rows = TASKS["vqa"].data.split(world, "test")
    picked = [rows[p] for p in range(4)]
    ranked = top_answers(folder, world.store, picked, k=3)

    model = LxmertSForQuestionAnswering.from_pretrained(folder).eval()
    processor = LxmertSProcessor.from_pretrained(folder)
    inputs = text_inputs(processor, [row["question"] for row in picked])
    inputs |= visual_inputs(
        world.store, np.array([row["image_index"] for row in picked]), processor.num_regions
    )
    with torch.no_grad():
        probabilities = torch.sigmoid(model(**inputs).logits)
    for row, top in zip(picked, ranked, strict=True):
        assert [item.score for item in top] == sorted((item.score for item in top), reverse=True)
        assert [item.right for item in top] == [item.text in row["answers"] for item in top]
    best = probabilities.argmax(-1)
    assert [top[0].text for top in ranked] == [answers[i] for i in best.tolist()]
    assert [top[0].score for top in ranked] == pytest.approx(probabilities.amax(-1).tolist(), abs=1e-5)


def test_top_captions_are_the_best_scoring_captions_of_the_split(world, tmp_path):
    folder = _saved(LxmertSForImageTextRetrieval, world, tmp_path / "retrieval")
    images = TASKS["retrieval"].data.split(world, "test")
    ranked = top_captions(folder, world.store, images, [0, 1])

    model = LxmertSForImageTextRetrieval.from_pretrained(folder).eval()
    processor = LxmertSProcessor.from_pretrained(folder)
    captions = [caption for texts in images["captions"] for caption in texts]
    for pick, top in zip((0, 1), ranked, strict=True):
        inputs = text_inputs(processor, captions)
        inputs |= visual_inputs(
            world.store, np.full(len(captions), images[pick]["image_index"]), processor.num_regions
        )
        with torch.no_grad():
            logits = model(**inputs).logits
        assert top.text == captions[logits.argmax().item()]
        assert top.score == pytest.approx(torch.sigmoid(logits.max()).item(), abs=1e-5)
        assert top.right == (top.text in images[pick]["captions"])


def test_scenes_are_described_from_a_synthetic_world_only(world, tmp_path):
    scenes = json.loads((world.folder / "scenes.json").read_text())
    described = scene_descriptions(world.folder)
    first = scenes[0]["objects"][0]
    assert described[scenes[0]["image_id"]].startswith(
        f"a {first['size']} {first['colour']} {first['material']} {first['category']}"
    )
    assert described[scenes[0]["image_id"]].count(", ") == len(scenes[0]["objects"]) - 1
    assert scene_descriptions(tmp_path) == {}


def test_a_curriculum_argument_needs_a_name_and_a_config(tmp_path):
    with pytest.raises(SystemExit, match="NAME=CONFIG"):
        stages_recipe.main(["--output-dir", str(tmp_path), "--curricula", "synthetic.yaml"])
