"""`recipes/finetune.py` and `recipes/evaluate_checkpoint.py` end to end on a tiny world with a tiny model,
and the learning rates of the new head and the loaded encoder (`lxmert_s_msp.training.finetuning`)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from huggingface_hub import ModelCard, ModelCardData
from recipe_modules import load_recipe
from safetensors.torch import load_file
from tiny_curriculum import TINY_MODEL
from transformers import BertConfig, LxmertConfig

from lxmert_s_msp.cli import run
from lxmert_s_msp.data.corpus_builders import load_answer_vocab
from lxmert_s_msp.data.downstream_data import DownstreamData
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.data.tokenizer import load_tokenizer
from lxmert_s_msp.hub.upload import HubUpload, HubUploadError, push_folder
from lxmert_s_msp.training.downstream_tasks import GQA_NEEDS_REAL_DATA, TASKS
from lxmert_s_msp.training.finetune_record import RECORD, OutputFolderError
from lxmert_s_msp.training.finetuning import (
    HEAD_LEARNING_RATE,
    PAPER_LEARNING_RATE,
    FinetuneSettings,
    build_model,
    finetuning_arguments,
    load_processor,
)
from lxmert_s_msp.training.finetuning import finetune as finetune_run
from lxmert_s_msp.training.trainer import FinetuningTrainer
from modeling_lxmert_s import (
    LxmertSConfig,
    LxmertSForImageTextRetrieval,
    LxmertSForPreTraining,
    LxmertSForQuestionAnswering,
    LxmertSForVisualReasoning,
)
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor

REPO = Path(__file__).resolve().parents[1]
RECALLS = {f"{kind}_r{k}" for kind in ("text", "image") for k in (1, 5, 10)}


finetune = load_recipe("finetune")
evaluate_checkpoint = load_recipe("evaluate_checkpoint")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return generate_world(tmp_path_factory.mktemp("data") / "world", WorldSettings(images=40, feature_dim=32))


def _save_checkpoint(world: Path, folder: Path, tasks: list[str], seed: int) -> Path:
    """A tiny pre-training checkpoint folder with its processor, as `recipes/pretrain.py` leaves in hub/.
    Not drawn with the fine-tuning seed (0): a model trained from scratch would start from its weights."""
    torch.manual_seed(seed)
    processor = LxmertSProcessor(load_tokenizer(world / "tokenizer"))
    config = LxmertSConfig(
        **TINY_MODEL, vocab_size=len(processor.tokenizer), visual_feat_dim=32, pretraining_tasks=tasks
    )
    LxmertSForPreTraining(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoint(world, tmp_path_factory) -> Path:
    return _save_checkpoint(world, tmp_path_factory.mktemp("pretrained"), ["mlm", "itm"], seed=1)


def run_finetune(task: str, model: str, world: Path, out: Path, *extra: str):
    arguments = ["--task", task, "--model", model, "--data_dir", str(world), "--output_dir", str(out)]
    return finetune.main([*arguments, "--batch_size", "8", "--max_steps", "3", "--report_to", "none", *extra])


def test_vqa_from_a_checkpoint_saves_a_loadable_model_and_its_val_metrics(
    world, checkpoint, tmp_path, capsys
):
    result = run_finetune("vqa", str(checkpoint), world, tmp_path / "vqa")
    report = json.loads((tmp_path / "vqa" / "metrics.json").read_text())
    assert (report["task"], report["split"], report["global_step"]) == ("vqa", "val", 3)
    accuracy = 100 * report["metrics"]["vqa_accuracy"]  # percent, beside the prior
    printed = capsys.readouterr().out
    assert f"vqa on val, in %: vqa_accuracy {accuracy:.1f} (answer priors: always '" in printed
    assert "; each question type's most frequent training answer: " in printed
    # a start-up line as pre-training prints: examples, steps, the schedule, both learning rates
    questions = len(TASKS["vqa"].data.split(DownstreamData.open(world), "train"))
    assert (
        f"Fine-tuning vqa from {checkpoint}: {questions} examples, 3 steps (max_steps) of batch 8: "
        "3 optimizer steps; learning rate 5e-05 (pre-trained parameters), 0.001 (new parameters)"
    ) in printed
    assert set(report["metrics"]) == {"loss", "vqa_accuracy"} and 0 <= report["metrics"]["vqa_accuracy"] <= 1
    assert report["metrics"] == result.metrics
    model = LxmertSForQuestionAnswering.from_pretrained(result.hub_folder)
    answers = load_answer_vocab(world / "corpora" / "vqa_train")
    assert [model.config.id2label[i] for i in range(model.config.num_qa_labels)] == answers
    assert LxmertSProcessor.from_pretrained(result.hub_folder).max_length == 20
    # the encoder started from the checkpoint: its embeddings moved only by 3 steps of lr 5e-5
    pretrained = load_file(checkpoint / "model.safetensors")["lxmert.embeddings.word_embeddings.weight"]
    tuned = model.lxmert.embeddings.word_embeddings.weight
    assert (tuned - pretrained).abs().max() < 1e-3
    # its card: the val score in the model-index, the checkpoint named by folder, no local path
    card = ModelCard.load(result.hub_folder / "README.md")
    assert card.data.pipeline_tag == "visual-question-answering" and card.data.base_model is None
    results = [(r.task_type, r.dataset_type, r.dataset_split, r.metric_type) for r in card.data.eval_results]
    assert results == [
        ("visual-question-answering", "synthetic-world", split, "vqa_accuracy") for split in ("val", "test")
    ]
    # the world's test split has answers: the kept model is scored on it too, beside the answer priors
    test_accuracy = report["test_metrics"]["vqa_accuracy"]
    assert [r.metric_value for r in card.data.eval_results] == [
        round(100 * report["metrics"]["vqa_accuracy"], 2),
        round(100 * test_accuracy, 2),
    ]
    assert ModelCardData(**card.data.to_dict()).eval_results == card.data.eval_results
    for split, value in (("val", report["metrics"]["vqa_accuracy"]), ("test", test_accuracy)):
        row = next(line for line in card.text.splitlines() if line.startswith(f"| {split} | vqa_accuracy |"))
        assert f"| {100 * value:.1f} | answer priors: always '" in row
        assert "; each question type's most frequent training answer: " in row
    assert f"vqa on test, in %: vqa_accuracy {100 * test_accuracy:.1f} (answer priors: " in printed
    # and by question type, each beside its own prior, as evaluation prints them
    for kind, row in report["test_by_type"]["question_type"].items():
        line = f"| {kind} | {row['questions']} | {100 * row['accuracy']:.1f} | {100 * row['prior']:.1f} ("
        assert line in card.text
    assert f"checkpoint `{checkpoint.name}`" in card.text and "| optimizer steps | 3 |" in card.text
    assert "useless on real images and text" in card.text and "@inproceedings{liu2021msp" in card.text
    assert str(tmp_path) not in card.content and str(checkpoint) not in card.content
    # the folder one uploads holds no pickle and no trainer state; the log history is beside it
    assert not {"training_args.bin", "trainer_state.json"} & {
        path.name for path in result.hub_folder.iterdir()
    }
    assert json.loads((tmp_path / "vqa" / "trainer_state.json").read_text())["global_step"] == 3

    # evaluated again by the evaluation recipe: the same val accuracy, every question answered; the files go
    # beside the model folder, which stays as it was saved (it is what one uploads)
    saved = sorted(path.name for path in result.hub_folder.iterdir())
    capsys.readouterr()
    evaluation = evaluate_checkpoint.main(
        ["--task", "vqa", "--model", str(result.hub_folder), "--split", "val", "--data_dir", str(world)]
    )
    assert evaluation.metrics["vqa_accuracy"] == pytest.approx(report["metrics"]["vqa_accuracy"])
    printed = capsys.readouterr().out
    accuracy = 100 * evaluation.metrics["vqa_accuracy"]
    assert f"vqa on val, in %: vqa_accuracy {accuracy:.1f} (answer priors: always '" in printed
    assert sorted(path.name for path in result.hub_folder.iterdir()) == saved
    written = json.loads((tmp_path / "vqa" / "eval-vqa-val.json").read_text())
    assert written["metrics"] == evaluation.metrics
    predictions = json.loads((tmp_path / "vqa" / "predictions-vqa-val.json").read_text())
    assert len(predictions) == 12 and {p["answer"] for p in predictions} <= set(answers)


def test_nlvr2_without_pretraining_takes_the_checkpoint_architecture_not_its_weights(
    world, checkpoint, tmp_path
):
    result = run_finetune("nlvr2", "none", world, tmp_path / "nlvr2", "--model_config_from", str(checkpoint))
    model = LxmertSForVisualReasoning.from_pretrained(result.hub_folder)
    assert (model.config.hidden_size, model.config.num_layers) == (TINY_MODEL["hidden_size"], 1)
    pretrained = load_file(checkpoint / "model.safetensors")["lxmert.embeddings.word_embeddings.weight"]
    assert (model.lxmert.embeddings.word_embeddings.weight - pretrained).abs().max() > 1e-2
    report = json.loads((tmp_path / "nlvr2" / "metrics.json").read_text())
    assert report["model"] == "none" and report["config_from"] == str(checkpoint)
    assert set(report["metrics"]) == {"loss", "accuracy"} and 0 <= report["metrics"]["accuracy"] <= 1
    assert report["metrics"]["accuracy"] * 4 == round(report["metrics"]["accuracy"] * 4)  # 4 val sentences


def test_retrieval_fine_tunes_on_pairs_and_ranks_the_val_split(world, checkpoint, tmp_path):
    result = run_finetune("retrieval", str(checkpoint), world, tmp_path / "retrieval")
    assert set(result.metrics) == RECALLS and all(0 <= value <= 1 for value in result.metrics.values())
    assert result.metrics["image_r5"] == 1.0  # 4 val images: each caption's image is in the top 5
    model = LxmertSForImageTextRetrieval.from_pretrained(result.hub_folder)
    itm = load_file(checkpoint / "model.safetensors")["heads.itm.classifier.weight"]
    assert model.heads["itm"].classifier.weight.shape == itm.shape  # the pre-trained ITM head, fine-tuned

    # the fine-tuned model's test scores and the checkpoint's zero-shot ones, side by side in its folder
    out = tmp_path / "retrieval"
    test = ["--task", "retrieval", "--split", "test", "--data_dir", str(world)]
    tuned = evaluate_checkpoint.main([*test, "--model", str(result.hub_folder)])
    zero_shot = evaluate_checkpoint.main(
        [*test, "--model", str(checkpoint), "--zero_shot", "--output_dir", str(out)]
    )
    written = json.loads((out / "eval-retrieval-test-zero-shot.json").read_text())
    assert (
        written["zero_shot"] and written["metrics"] == zero_shot.metrics and set(zero_shot.metrics) == RECALLS
    )
    kept = json.loads((out / "eval-retrieval-test.json").read_text())
    assert not kept["zero_shot"] and kept["metrics"] == tuned.metrics


@pytest.fixture(scope="module")
def vsc_checkpoint(world, tmp_path_factory) -> Path:
    """A checkpoint with the VSC head beside ITM."""
    return _save_checkpoint(world, tmp_path_factory.mktemp("pretrained-vsc"), ["mlm", "vsc", "itm"], seed=2)


def test_retrieval_from_a_vsc_checkpoint_ranks_in_two_stages(world, vsc_checkpoint, tmp_path, capsys):
    result = run_finetune(
        "retrieval", str(vsc_checkpoint), world, tmp_path / "retrieval", "--rerank_top_k", "2", "--all_pairs"
    )
    ranked = {f"{ranking}_{name}" for ranking in ("contrastive", "reranked") for name in RECALLS}
    assert {name for name in result.metrics if not name.startswith("kept_")} == RECALLS | ranked
    report = json.loads((tmp_path / "retrieval" / "metrics.json").read_text())
    assert (report["retrieval_ranking"], report["rerank_top_k"]) == ("all_pairs", 2)
    assert report["chance"]["image_r1"] == 1 / 4  # 4 val images
    printed = capsys.readouterr().out
    assert "Fine-tuned retrieval (val: 4 images x 20 captions" in printed
    assert (
        "top-2 by contrastive similarity re-ranked by ITM log-odds + VSC logit (cross-modal encoder): IR"
        in printed
    )
    # the fine-tuned model keeps the VSC head: fine-tuning trains the ITM score only
    model = LxmertSForImageTextRetrieval.from_pretrained(result.hub_folder)
    pretrained = load_file(vsc_checkpoint / "model.safetensors")
    assert torch.equal(
        model.heads["vsc"].text_projection.weight, pretrained["heads.vsc.text_projection.weight"]
    )

    zero_shot = evaluate_checkpoint.main(
        ["--task", "retrieval", "--model", str(vsc_checkpoint), "--split", "test", "--zero_shot"]
        + ["--rerank_top_k", "3", "--data_dir", str(world), "--output_dir", str(tmp_path / "zero-shot")]
    )
    written = json.loads((tmp_path / "zero-shot" / "eval-retrieval-test-zero-shot.json").read_text())
    assert (written["retrieval_ranking"], written["rerank_top_k"]) == ("reranked", 3)
    assert written["metrics"] == zero_shot.metrics
    assert set(zero_shot.metrics) == RECALLS | {f"contrastive_{name}" for name in RECALLS}
    printed = capsys.readouterr().out
    assert (
        "Zero-shot retrieval (test: 4 images x 20 captions" in printed and "(chance 25.0 / 100.0" in printed
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--task", "vqa", "--all_pairs"], "use them with --task retrieval"),
        (["--task", "retrieval", "--rerank-top-k", "-1"], "--rerank_top_k: expected 0"),
    ],
)
def test_retrieval_ranking_options_are_checked(arguments, message, capsys):
    with pytest.raises(SystemExit):
        evaluate_checkpoint.parse_args([*arguments, "--model", "m", "--split", "test"])
    assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        finetune.parse_args([*arguments, "--model", "m"])
    assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def foreign_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Folders that are not LXMERT-S checkpoints: a BERT one, a transformers LXMERT one, an empty one."""
    folder = tmp_path_factory.mktemp("foreign")
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(folder / "bert")
    LxmertConfig().save_pretrained(folder / "lxmert")
    (folder / "empty").mkdir()
    return {name: folder / name for name in ("bert", "lxmert", "empty")}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--num_train_epochs", "-1"], r"--num_train_epochs: expected a positive number, got -1\.0"),
        (["--num_train_epochs", "0"], r"--num_train_epochs: expected a positive number, got 0\.0"),
        (["--max_steps", "-3"], r"--max_steps: expected a positive number, got -3"),
        (["--max_steps", "0"], r"--max_steps: expected a positive number, got 0"),
        (["--batch_size", "0"], r"--batch_size: expected a positive number, got 0"),
        (["--learning_rate=-1e-5"], r"--learning_rate: expected a positive number, got -1e-05"),
        (["--head_learning_rate", "0"], r"--head_learning_rate: expected a positive number, got 0\.0"),
        (["--model", "{missing}"], r"--model: \S+missing: no such folder; give a pre-training checkpoint"),
        (["--model", "{bert}"], r"--model: \S+config\.json: model_type 'bert', not an LXMERT-S checkpoint"),
        (["--model", "{empty}"], r"--model: \S+empty/config\.json: not a checkpoint's config"),
        (
            ["--model", "{lxmert}"],
            r"--model: \S+lxmert is a transformers LXMERT checkpoint; convert it to LXMERT-S first: "
            r"python recipes/convert_lxmert_checkpoint\.py",
        ),
        (
            ["--model", "none", "--model_config_from", "{missing}"],
            r"--model_config_from: \S+missing: no such folder",
        ),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(
    world, checkpoint, foreign_checkpoints, tmp_path, capsys, arguments, message
):
    folders = {**foreign_checkpoints, "missing": tmp_path / "missing"}
    arguments = [argument.format(**folders) for argument in arguments]
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        run_finetune("vqa", str(checkpoint), world, out, *arguments)
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_finetune_refuses_what_the_recipe_refuses(world, tmp_path):
    data = DownstreamData.open(world)
    with pytest.raises(ValueError, match=r"epochs: expected a positive number, got -1"):
        finetune_run(TASKS["vqa"], "none", data, tmp_path / "out", FinetuneSettings(epochs=-1))
    with pytest.raises(ValueError, match=r"model: \S+nowhere: no such folder"):
        finetune_run(TASKS["vqa"], str(tmp_path / "nowhere"), data, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_gqa_on_the_synthetic_world_is_refused_with_how_to_get_real_data(world, checkpoint, capsys):
    with pytest.raises(SystemExit):
        finetune.main(["--task", "gqa", "--model", str(checkpoint)])
    assert GQA_NEEDS_REAL_DATA in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="is a synthetic world. GQA needs real data"):
        finetune.main(["--task", "gqa", "--model", str(checkpoint), "--data_dir", str(world)])


def test_no_recipe_shadows_a_module_it_imports():
    """Run as a script, a recipe's folder comes first on sys.path: a recipe named like an installed module
    (`recipes/evaluate.py` and the `evaluate` library the metrics load) would be imported in its place."""
    shadowing = [path.name for path in (REPO / "recipes").glob("*.py") if importlib.util.find_spec(path.stem)]
    assert shadowing == []


# ---- learning rates: the new head's and the loaded parameters' ------------------------------------

BASE_RATE, HEAD_RATE = 2e-5, 3e-3


def _vqa_trainer(world: Path, model: str, out: Path, config_from: Path | None = None) -> FinetuningTrainer:
    """The trainer `finetune` builds for VQA, untrained, at BASE_RATE / HEAD_RATE and with weight decay, so
    that its decay groups are told apart."""
    task, data = TASKS["vqa"], DownstreamData.open(world)
    processor = load_processor(model, config_from, data)
    network, new = build_model(task, model, data, processor, config_from, task.data.labels(data))
    settings = FinetuneSettings(
        max_steps=10, batch_size=8, learning_rate=BASE_RATE, head_learning_rate=HEAD_RATE, report_to=["none"]
    )
    arguments = finetuning_arguments(task, out, 1, settings)
    return FinetuningTrainer(
        model=network,
        args=dataclasses.replace(arguments, weight_decay=0.01),
        new_parameters=new,
        eval_dataset=task.data.split(data, "val"),  # VQA keeps its best epoch on val
    )


def _rates_by_parameter(trainer: FinetuningTrainer) -> dict[str, tuple[float, float]]:
    """{parameter name: (learning rate, weight decay)} of the trainer's optimizer; each parameter once."""
    names = {id(parameter): name for name, parameter in trainer.model.named_parameters()}
    rates = [
        (names[id(parameter)], (group["lr"], group["weight_decay"]))
        for group in trainer.optimizer.param_groups
        for parameter in group["params"]
    ]
    assert len(rates) == len(dict(rates)) == len(names)
    return dict(rates)


def test_the_new_head_trains_at_the_head_rate_and_the_loaded_encoder_at_the_base_rate(
    world, checkpoint, tmp_path
):
    trainer = _vqa_trainer(world, str(checkpoint), tmp_path)
    trainer.create_optimizer()
    loaded = set(load_file(checkpoint / "model.safetensors"))
    new = {name for name, _ in trainer.model.named_parameters() if name not in loaded}
    assert new and all(name.startswith("answer_head.") for name in new)  # the checkpoint had no answer head
    decayed = set(trainer.get_decay_parameter_names(trainer.model))
    rates = _rates_by_parameter(trainer)
    for name, (rate, decay) in rates.items():
        assert rate == (HEAD_RATE if name in new else BASE_RATE), name
        assert decay == (0.01 if name in decayed else 0.0), name  # the Trainer's weight-decay rules kept
    # the head has weights (decayed) and biases (not): four groups, the loaded ones first (the Trainer logs
    # the first group's rate)
    assert [(g["lr"], g["weight_decay"]) for g in trainer.optimizer.param_groups] == [
        (BASE_RATE, 0.01), (BASE_RATE, 0.0), (HEAD_RATE, 0.01), (HEAD_RATE, 0.0)
    ]  # fmt: skip


def test_without_pretraining_every_parameter_trains_at_the_head_rate(world, checkpoint, tmp_path):
    trainer = _vqa_trainer(world, "none", tmp_path, config_from=checkpoint)
    trainer.create_optimizer()
    assert {rate for rate, _ in _rates_by_parameter(trainer).values()} == {HEAD_RATE}


def test_the_schedule_scales_both_rates_by_the_same_factor(world, checkpoint, tmp_path):
    trainer = _vqa_trainer(world, str(checkpoint), tmp_path)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)  # 1 warm-up step, then linear decay to 0
    for _ in range(4):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    factor = (10 - 4) / (10 - 1)
    assert [group["lr"] for group in trainer.optimizer.param_groups] == pytest.approx(
        [rate * factor for rate in (BASE_RATE, BASE_RATE, HEAD_RATE, HEAD_RATE)], rel=1e-9
    )


def test_new_parameters_must_name_parameters_of_the_model(world, checkpoint, tmp_path):
    built = _vqa_trainer(world, str(checkpoint), tmp_path)
    with pytest.raises(ValueError, match=r"new_parameters: \['classifier.weight'\] are not parameters"):
        FinetuningTrainer(
            model=built.model,
            args=built.args,
            new_parameters={"classifier.weight"},
            eval_dataset=built.eval_dataset,
        )


def test_the_recipe_s_learning_rates_reach_the_optimizer_and_are_recorded(
    world, checkpoint, tmp_path, monkeypatch
):
    created = []
    create_optimizer = FinetuningTrainer.create_optimizer

    def recording(self: FinetuningTrainer, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        optimizer = create_optimizer(self, model)
        created.append({name: rate for name, (rate, _) in _rates_by_parameter(self).items()})
        return optimizer

    monkeypatch.setattr(FinetuningTrainer, "create_optimizer", recording)
    rates = ["--learning_rate", str(BASE_RATE), "--head_learning_rate", str(HEAD_RATE)]
    # any other TrainingArguments field reaches the Trainer as given
    result = run_finetune("vqa", str(checkpoint), world, tmp_path / "vqa", *rates, "--weight_decay", "0.25")
    (optimizer,) = created
    assert {name for name, rate in optimizer.items() if rate == HEAD_RATE} == {
        name for name in optimizer if name.startswith("answer_head.")
    }
    assert {rate for name, rate in optimizer.items() if not name.startswith("answer_head.")} == {BASE_RATE}
    report = json.loads((tmp_path / "vqa" / "metrics.json").read_text())
    assert (report["learning_rate"], report["head_learning_rate"]) == (BASE_RATE, HEAD_RATE)
    (arguments,) = (tmp_path / "vqa" / "checkpoints").glob("checkpoint-*/training_args.bin")
    saved = torch.load(arguments, weights_only=False)
    assert (saved.learning_rate, saved.head_learning_rate) == (BASE_RATE, HEAD_RATE)
    assert saved.weight_decay == 0.25 and report["training_overrides"] == {"weight_decay": 0.25}
    assert "| weight_decay | 0.25 |" in (result.hub_folder / "README.md").read_text()


def test_the_recipe_defaults_are_the_paper_s_rate_and_our_head_rate():
    args = finetune.parse_args(["--task", "vqa", "--model", "none"])
    assert (args.learning_rate, args.head_learning_rate) == (PAPER_LEARNING_RATE, HEAD_LEARNING_RATE)
    assert (PAPER_LEARNING_RATE, HEAD_LEARNING_RATE) == (5e-5, 1e-3)
    # the recipe's defaults where TrainingArguments has others (seed 42, 3 epochs, batch 8 per device)
    assert (args.seed, args.epochs, args.max_steps, args.batch_size) == (0, None, None, 32)
    assert (args.report_to, args.output_dir, args.training_overrides) == (
        ["tensorboard"],
        Path("outputs/finetune-vqa"),
        {},
    )


def test_training_arguments_flags_replace_the_recipe_defaults(capsys):
    flags = ["--seed", "3", "--num_train_epochs", "2", "--per_device_train_batch_size", "4"]
    flags += ["--bf16", "false"]
    args = finetune.parse_args(["--task", "vqa", "--model", "none", *flags, "--output-dir", "runs/x"])
    assert (args.seed, args.epochs, args.batch_size, args.output_dir) == (3, 2.0, 4, Path("runs/x"))
    assert args.training_overrides == {"bf16": False}  # the fields the recipe does not read itself
    with pytest.raises(SystemExit):
        finetune.parse_args(["--task", "vqa", "--model", "none", "--batch_size", "8", *flags])
    assert "--batch_size (global) and --per_device_train_batch_size: give one" in capsys.readouterr().err


def test_push_to_hub_uploads_the_hub_folder_and_nothing_else(world, checkpoint, tmp_path, hub_calls, capsys):
    out = tmp_path / "nlvr2"
    flags = ("--push_to_hub", "--hub_model_id", "me/lxmert-s-nlvr2", "--hub_token", "secret")
    result = run_finetune("nlvr2", str(checkpoint), world, out, *flags, "--hub_private_repo", "true")
    (create, created), (upload, uploaded) = hub_calls
    assert (create, upload) == ("create_repo", "upload_folder")
    assert (created["repo_id"], created["private"], created["token"]) == ("me/lxmert-s-nlvr2", True, "secret")
    assert (uploaded["repo_id"], uploaded["folder_path"], uploaded["token"]) == (
        "me/lxmert-s-nlvr2",
        result.hub_folder,
        "secret",
    )
    assert not {"allow_patterns", "ignore_patterns", "path_in_repo"} & set(uploaded)  # the folder as it is
    uploaded_files = {path.name for path in result.hub_folder.iterdir()}
    assert {"README.md", "config.json", "model.safetensors", "processor_config.json"} <= uploaded_files
    assert not uploaded_files & {"checkpoints", "metrics.json"}  # the rest of the output folder stays local
    assert "Pushed to the Hub: https://huggingface.co/me/lxmert-s-nlvr2" in capsys.readouterr().out


def test_hub_flags_without_push_to_hub_are_refused(world, checkpoint, tmp_path, hub_calls, capsys):
    with pytest.raises(SystemExit):
        run_finetune("nlvr2", str(checkpoint), world, tmp_path / "out", "--hub_model_id", "me/model")
    assert "--hub_model_id goes with --push_to_hub" in capsys.readouterr().err
    assert hub_calls == [] and not (tmp_path / "out").exists()


def test_resume_from_checkpoint_reaches_the_trainer(world, checkpoint, tmp_path):
    missing = str(tmp_path / "checkpoint-7")  # not there: the Trainer itself refuses it
    with pytest.raises(ValueError, match=f"Can't find a valid checkpoint at {missing}"):
        run_finetune(
            "nlvr2", str(checkpoint), world, tmp_path / "out", "--resume_from_checkpoint", f"{missing}"
        )


def test_evaluation_reads_its_training_arguments_flags_and_refuses_the_others(capsys):
    base = ["--task", "nlvr2", "--model", "m", "--split", "val"]
    args = evaluate_checkpoint.parse_args([*base, "--per_device_eval_batch_size", "64", "--output_dir", "o"])
    assert (args.batch_size, args.output_dir) == (64, Path("o"))
    args = evaluate_checkpoint.parse_args(base)
    assert (args.batch_size, args.output_dir) == (256, Path("."))  # beside the model folder "m"
    with pytest.raises(SystemExit):
        evaluate_checkpoint.parse_args([*base, "--weight_decay", "0.1"])  # it would change nothing
    refused = capsys.readouterr().err
    assert "--weight_decay: evaluation reads only --output_dir and --per_device_eval_batch_size" in refused


# ---- one run per output folder (issue 29 item 1), outputs outside model folders (issue 27 item 8) ---------


def _files(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_a_run_of_other_settings_is_refused_naming_what_differs_and_replaces_the_old_one_when_asked(
    world, checkpoint, tmp_path
):
    """The README's fresh-weights pattern into the folder of a run from the checkpoint: it replaced that
    run's model and metrics and left the old model's evaluation beside the new one."""
    out = tmp_path / "finetune-vqa"
    run_finetune("vqa", str(checkpoint), world, out)
    test_split = ["--task", "vqa", "--split", "test", "--data_dir", str(world)]
    evaluate_checkpoint.main([*test_split, "--model", str(out / "hub")])
    before = _files(out)
    fresh = ("vqa", "none", world, out, "--model_config_from", str(checkpoint))
    with pytest.raises(OutputFolderError) as refused:
        run_finetune(*fresh)
    message = str(refused.value)
    assert message.startswith(f"{out} holds the results of another run (")
    assert f"model: '{checkpoint.resolve()}' -> 'none'" in message
    assert f"config_from: None -> '{checkpoint.resolve()}'" in message and "--overwrite_output_dir" in message
    assert _files(out) == before  # nothing touched

    # the same settings train there again, as before, and the same model's evaluation stays
    run_finetune("vqa", str(checkpoint), world, out)
    assert (out / "eval-vqa-test.json").read_bytes() == before[out / "eval-vqa-test.json"]

    # asked to, the other run replaces the folder's results and the old model's evaluations go
    run_finetune(*fresh, "--overwrite_output_dir")
    assert not list(out.glob("eval-*.json")) and not list(out.glob("predictions-*.json"))
    assert json.loads((out / "metrics.json").read_text())["model"] == "none"
    assert json.loads((out / RECORD).read_text())["config_from"] == str(checkpoint.resolve())
    assert LxmertSForQuestionAnswering.from_pretrained(out / "hub").config.num_qa_labels > 0


def test_a_folder_with_results_but_no_record_is_refused(world, checkpoint, tmp_path):
    """A folder results were written into before runs recorded their settings (or by another command)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "eval-vqa-test.json").write_text("{}")
    with pytest.raises(
        OutputFolderError, match=rf"\(eval-vqa-test.json\): no {RECORD} says what trained them"
    ):
        run_finetune("vqa", str(checkpoint), world, out)
    assert sorted(path.name for path in out.iterdir()) == ["eval-vqa-test.json"]


def test_an_output_dir_inside_a_model_folder_is_refused(world, checkpoint, tmp_path, capsys):
    """`--output_dir Y/hub/sub` trained inside a Hub folder, `evaluate_checkpoint.py --output_dir X/hub` wrote
    its json files into one: both would be uploaded with the model."""
    before = _files(checkpoint)
    for inside in (checkpoint / "sub", checkpoint):
        with pytest.raises(SystemExit):
            run_finetune("vqa", str(checkpoint), world, inside)
        assert f"{checkpoint} is a model folder (config.json and weights)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_checkpoint.main(
            ["--task", "vqa", "--model", str(checkpoint), "--split", "val", "--output_dir", str(checkpoint)]
        )
    assert f"{checkpoint} is a model folder (config.json and weights)" in capsys.readouterr().err
    assert _files(checkpoint) == before


def test_push_to_hub_without_the_hub_says_the_outputs_are_safe_and_how_to_push(
    world, checkpoint, tmp_path, capsys
):
    """Offline (the tests set HF_HUB_OFFLINE): the run finishes, then the upload fails, saying how to push."""
    out = tmp_path / "nlvr2"
    arguments = ["--task", "nlvr2", "--model", str(checkpoint), "--data_dir", str(world)]
    arguments += ["--output_dir", str(out), "--max_steps", "2", "--batch_size", "8", "--report_to", "none"]
    with pytest.raises(SystemExit) as exited:
        run(finetune.main, [*arguments, "--push_to_hub", "--hub_model_id", "me/lxmert-s-nlvr2"])
    printed = capsys.readouterr().err
    error = printed.splitlines()[-1]  # after the progress bars
    assert exited.value.code == 1 and "Traceback" not in printed
    assert error.startswith(
        "error: --push_to_hub: could not upload to me/lxmert-s-nlvr2 (OfflineModeIsEnabled"
    )
    assert f"outputs are safe: {out / 'hub'} is complete" in error
    assert error.endswith(f"hf upload me/lxmert-s-nlvr2 {out / 'hub'}")
    assert LxmertSForVisualReasoning.from_pretrained(out / "hub") and (out / "metrics.json").is_file()


def test_an_unreachable_hub_fails_the_upload_with_how_to_push_later(tmp_path, monkeypatch):
    """No network (a closed port stands for it): the client's connection error, which is not an OSError."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    upload = HubUpload("me/model", token="hf_test", private=True)
    with pytest.raises(HubUploadError, match=r"\(ConnectError: .*\)\. The run finished") as failed:
        push_folder(tmp_path, upload, "message")
    assert str(failed.value).endswith(f"hf upload me/model {tmp_path} --private")
