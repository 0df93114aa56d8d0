"""The curriculum runner: the stages in order from the previous weights, the Hub folder, the plot, re-runs."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from recipe_modules import load_recipe
from safetensors.torch import load_file, save_file
from tiny_curriculum import tiny_stages, write_tiny_curriculum

from lxmert_s_msp.data.collators import read_regions
from lxmert_s_msp.evaluation.retrieval import itm_match_scorer, score_all_pairs, zero_shot_retrieval
from lxmert_s_msp.training.curriculum import load_curriculum
from lxmert_s_msp.training.pretraining import final_losses, run_curriculum, stage_model, training_arguments
from lxmert_s_msp.training.stage_data import PretrainingData
from modeling_lxmert_s import LxmertSForPreTraining
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor

REPO = Path(__file__).resolve().parents[1]
# tokens and phrases: 32 train images; captions: 5 each. Batch 8, epochs (2, 2, 1).
# 32 training images; their phrases pack into 62 texts of 20 tokens; 160 captions
EXPECTED_STEPS = [2 * math.ceil(32 / 8), 2 * math.ceil(62 / 8), math.ceil(160 / 8)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrain")
    curriculum = load_curriculum(write_tiny_curriculum(folder))
    return curriculum, run_curriculum(curriculum, folder / "out"), folder / "out"


def test_every_stage_runs_in_order_with_its_own_tasks(finished):
    curriculum, result, out = finished
    assert [stage.name for stage in result.stages] == ["token", "phrase", "sentence"]
    assert [stage.global_step for stage in result.stages] == EXPECTED_STEPS
    for index, (stage, config) in enumerate(zip(result.stages, curriculum.stages, strict=True), start=1):
        assert stage.folder == out / f"{index}-{config.name}" / "final"
        saved = LxmertSForPreTraining.from_pretrained(stage.folder)
        assert saved.config.pretraining_tasks == config.tasks
        logged = {key.removeprefix("loss/") for entry in stage.log_history for key in entry if "/" in key}
        assert logged == set(config.tasks)
        assert set(stage.final_losses) == {"loss", *(f"loss/{task}" for task in config.tasks)}


def test_a_stage_starts_from_the_previous_stage_weights(finished):
    curriculum, result, _ = finished
    token = LxmertSForPreTraining.from_pretrained(result.stages[0].folder)
    data = PretrainingData.open(result.data_folder)
    phrase = stage_model(curriculum, data, curriculum.stages[1], result.stages[0].folder)
    before = token.state_dict()
    shared = [name for name in phrase.state_dict() if name in before]
    assert any(name.startswith("heads.mlm") for name in shared)  # shared heads carry over too
    for name in shared:
        assert torch.equal(phrase.state_dict()[name], before[name]), name
    assert (
        "heads.titp.dense.weight" in phrase.state_dict()
        and "heads.ifrs.decoder.weight" not in phrase.state_dict()
    )


def test_merged_log_plot_and_model_card(finished):
    curriculum, result, out = finished
    merged = json.loads((out / "log_history.json").read_text())
    steps = [entry["curriculum_step"] for entry in merged]
    assert steps == sorted(steps) and steps[-1] == sum(EXPECTED_STEPS)
    assert {entry["stage"] for entry in merged} == {"token", "phrase", "sentence"}
    assert result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result.plot.stat().st_size > 20_000
    card = (result.hub_folder / "README.md").read_text()
    assert "trust_remote_code=True" in card and "synthetic world" in card
    for stage in result.stages:
        row = next(line for line in card.splitlines() if line.startswith(f"| {stage.name} |"))
        assert f"| {stage.global_step} |" in row
        assert f"loss {stage.final_losses['loss']:.4g}" in row
    # the corpus column tells a corpus's rows from the texts trained on; "trained for" says in what unit
    data = PretrainingData.open(result.data_folder)
    rows = {stage.name: _cells(card, stage.name) for stage in curriculum.stages}
    header = _cells(card, "stage")
    assert header[1] == "corpus" and header[4] == "trained for"
    phrases = len(data.corpus("phrases"))
    assert rows["phrase"][1] == f"phrases ({phrases:,} rows packed into 62 texts)"
    assert rows["sentence"][1] == "captions (160 rows)" and rows["token"][4] == "2 epochs"
    # what a Hub card carries: what the model is for (here: nothing real), how to cite, where the code is
    tokenizer = len(data.tokenizer)
    assert "## Intended use and limitations" in card and "useless on real images and text" in card
    assert f"its tokenizer has {tokenizer:,} word pieces" in card
    assert (
        "## Citation" in card
        and "@inproceedings{liu2021msp" in card
        and "@inproceedings{tan2019lxmert" in card
    )
    assert "[`modeling_lxmert_s.py`](modeling_lxmert_s.py)" in card
    assert f"`accelerate launch recipes/pretrain.py --config {curriculum.path.name}`" in card


def _cells(card: str, first: str) -> list[str]:
    """The cells of the card's table row whose first cell is `first`."""
    line = next(line for line in card.splitlines() if line.startswith(f"| {first} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


ISOLATED_LOAD = textwrap.dedent(
    """
    import sys
    sys.modules["modeling_lxmert_s"] = None
    sys.modules["lxmert_s_msp"] = sys.modules["faster_rcnn_vg"] = None
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForPreTraining, AutoModelForQuestionAnswering, AutoProcessor

    hub, inputs_file, out_file = sys.argv[1:]
    image = load_file(inputs_file)
    processor = AutoProcessor.from_pretrained(hub, trust_remote_code=True)
    model = AutoModelForPreTraining.from_pretrained(hub, trust_remote_code=True).eval()
    inputs = processor(text=["a red car", "two dogs"], visual_feats=image["features"].numpy(),
                       boxes=image["boxes"].numpy(), boxes_normalized=True)
    # fine-tuning starts from the same folder: the encoder loads, a new answer head is initialised
    vqa = AutoModelForQuestionAnswering.from_pretrained(hub, trust_remote_code=True, num_qa_labels=7).eval()
    with torch.no_grad():
        assert vqa(**inputs).logits.shape == (2, 7)
        save_file({"itm_logits": model(**inputs).itm_logits}, out_file)
    """
)


def test_hub_folder_loads_model_and_processor_without_the_package(finished, tmp_path):
    _, result, _ = finished
    hub = result.hub_folder
    for name in (
        "config.json",
        "model.safetensors",
        "modeling_lxmert_s.py",
        "processing_lxmert_s.py",
        "tokenizer.json",
    ):
        assert (hub / name).is_file(), name
    assert json.loads((hub / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing_lxmert_s.LxmertSProcessor"
    }
    data = PretrainingData.open(result.data_folder)
    regions = read_regions(data.store, np.array([0, 1]), data.processor(20).num_regions)
    save_file(
        {"features": regions["features"], "boxes": regions["boxes"].float()}, tmp_path / "image.safetensors"
    )
    script = tmp_path / "load.py"
    script.write_text(ISOLATED_LOAD)
    subprocess.run(
        [
            sys.executable,
            str(script),
            str(hub),
            str(tmp_path / "image.safetensors"),
            str(tmp_path / "out.safetensors"),
        ],
        check=True,
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    model = LxmertSForPreTraining.from_pretrained(hub).eval()
    processor = LxmertSProcessor.from_pretrained(hub)
    inputs = processor(
        text=["a red car", "two dogs"],
        visual_feats=regions["features"].numpy(),
        boxes=regions["boxes"].float().numpy(),
        boxes_normalized=True,
    )
    with torch.no_grad():
        expected = model(**inputs).itm_logits
    torch.testing.assert_close(load_file(tmp_path / "out.safetensors")["itm_logits"], expected)


def test_rerunning_a_finished_curriculum_trains_nothing(finished):
    curriculum, result, out = finished
    stamps = {path: path.stat().st_mtime_ns for path in out.rglob("model.safetensors")}
    again = run_curriculum(curriculum, out)
    assert [stage.global_step for stage in again.stages] == EXPECTED_STEPS
    assert {
        path: path.stat().st_mtime_ns for path in out.rglob("model.safetensors") if "hub" not in path.parts
    } == {path: stamp for path, stamp in stamps.items() if "hub" not in path.parts}


def test_all_pair_scores_equal_one_pair_at_a_time(finished):
    _, result, _ = finished
    data = PretrainingData.open(result.data_folder)
    processor = data.processor(20)
    model = LxmertSForPreTraining.from_pretrained(result.hub_folder).eval()
    captions = ["a red car.", "a small dog above a cat.", "two birds"]
    rows = [3, 0, 5, 7]
    scores = score_all_pairs(itm_match_scorer(model), data.store, processor, rows, captions, batch_size=5)
    assert scores.shape == (4, 3)
    for i, row in enumerate(rows):
        for j, caption in enumerate(captions):
            single = score_all_pairs(itm_match_scorer(model), data.store, processor, [row], [caption])
            assert single.item() == pytest.approx(scores[i, j].item(), abs=1e-5)


def test_zero_shot_retrieval_on_the_test_split(finished):
    _, result, _ = finished
    retrieval = zero_shot_retrieval(result.hub_folder, result.data_folder, "test")
    assert (retrieval.images, retrieval.captions) == (4, 20)
    assert retrieval.recalls["image_r5"] == 1.0  # 4 candidate images: every caption's image is in the top 5
    assert retrieval.recalls["text_r1"] <= retrieval.recalls["text_r5"] <= retrieval.recalls["text_r10"]
    assert "4 images x 20 captions" in retrieval.summary()


def test_zero_shot_retrieval_needs_the_itm_head(finished):
    _, result, _ = finished
    with pytest.raises(ValueError, match="needs the ITM head"):
        zero_shot_retrieval(result.stages[0].folder, result.data_folder, "test")


def test_a_mixed_stage_trains_each_batch_on_one_corpus_with_its_tasks(tmp_path, finished):
    _, result, _ = finished
    stage = {
        "name": "mixed",
        "sources": [
            {"corpus": "tokens", "tasks": ["mlm", "ifrs"]},
            {"corpus": "captions", "tasks": ["mlm", "itm"]},
        ],
        "epochs": 1,
        "batch_size": 8,
        "learning_rate": 1e-3,
    }
    path = write_tiny_curriculum(tmp_path, [stage], data={"dir": str(result.data_folder)})
    (mixed,) = run_curriculum(load_curriculum(path), tmp_path / "out").stages
    assert mixed.global_step == 32 // 8 + 160 // 8
    per_step = [entry for entry in mixed.log_history if "loss" in entry]
    token_steps = sum("loss/ifrs" in entry for entry in per_step)
    assert token_steps == 4  # each logged step (logging_steps=1) is one batch of one corpus
    assert all(("loss/ifrs" in entry) != ("loss/itm" in entry) for entry in per_step)


def test_final_losses_keep_the_last_value_of_each():
    history = [{"loss": 3.0, "loss/mlm": 2.0, "step": 1}, {"loss": 2.0, "step": 2}, {"train_loss": 9.0}]
    assert final_losses(history) == {"loss": 2.0, "loss/mlm": 2.0}


def test_carried_optimizer_state_reaches_the_next_stage(tmp_path, finished):
    _, result, _ = finished
    path = write_tiny_curriculum(
        tmp_path,
        tiny_stages(epochs=(1, 1, 1))[:2],
        data={"dir": str(result.data_folder)},
        optimizer_state="carry",
    )
    curriculum = load_curriculum(path)
    run_curriculum(curriculum, tmp_path / "out")
    carried = torch.load(tmp_path / "out" / "1-token" / "final" / "optimizer_state.pt", weights_only=True)
    word_embeddings = carried["lxmert.embeddings.word_embeddings.weight"]
    assert word_embeddings["exp_avg_sq"].abs().sum() > 0
    assert "heads.ifrs.decoder.weight" in carried
    # stage 2 (8 steps: 62 phrase texts) started from stage 1's moments: its step count continues stage 1's
    after = torch.load(tmp_path / "out" / "2-phrase" / "final" / "optimizer_state.pt", weights_only=True)
    assert after["lxmert.embeddings.word_embeddings.weight"]["step"] == word_embeddings["step"] + 8
    assert after["heads.titp.dense.weight"]["step"] == 8  # a head new in stage 2 starts fresh


def test_config_switches_and_the_global_batch_reach_the_training_arguments(tmp_path):
    path = write_tiny_curriculum(
        tmp_path, tiny_stages(batch_size=12), bf16=True, torch_compile=True, activation_checkpointing=True
    )
    curriculum = load_curriculum(path)
    stage = dataclasses.replace(curriculum.stages[0], gradient_accumulation_steps=3, warmup_ratio=0.1)
    arguments = training_arguments(curriculum, stage, tmp_path / "stage")
    assert (arguments.bf16, arguments.torch_compile, arguments.activation_checkpointing) == (True, True, True)
    assert (arguments.per_device_train_batch_size, arguments.gradient_accumulation_steps) == (4, 3)
    assert arguments.get_warmup_steps(50) == 5
    assert arguments.remove_unused_columns is False
    with pytest.raises(ValueError, match="batch_size: 12 is not divisible by 1 processes x 5 accumulation"):
        training_arguments(curriculum, dataclasses.replace(stage, gradient_accumulation_steps=5), tmp_path)


def test_push_to_hub_uploads_the_final_hub_folder_only(finished, hub_calls, capsys):
    curriculum, result, out = finished
    pretrain = load_recipe("pretrain")
    # last in this module, as it rewrites the Hub folder: the finished run again, every stage done, so it
    # only writes the Hub folder (now with scores) and pushes it
    pretrain.main(["--config", str(curriculum.path), "--output-dir", str(out), "--push_to_hub"])
    assert [(method, arguments["repo_id"]) for method, arguments in hub_calls] == [
        ("create_repo", out.name),  # transformers' default: the output folder's name
        ("upload_folder", f"me/{out.name}"),  # in the login's namespace
    ]
    uploaded = hub_calls[1][1]
    assert uploaded["folder_path"] == result.hub_folder and hub_calls[0][1]["private"] is False
    assert not {"allow_patterns", "ignore_patterns", "path_in_repo"} & set(uploaded)
    assert {path.name for path in result.hub_folder.iterdir()} >= {"README.md", "model.safetensors"}
    assert f"Pushed to the Hub: https://huggingface.co/me/{out.name}" in capsys.readouterr().out
