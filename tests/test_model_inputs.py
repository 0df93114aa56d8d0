"""Bad inputs and labels of the models, one table: each gives an error that starts with the argument's name,
or is handled as documented (a batch whose ITM labels are all -100 trains no ITM: a zero loss, not NaN)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from model_inputs import (
    ALIGNMENT_TASKS,
    EVERY_HEAD,
    RELATION_SETTINGS,
    alignment_labels,
    random_inputs,
    random_labels,
    tiny_config,
)

from modeling_lxmert_s import (
    PRETRAINING_TASKS,
    LxmertSForImageTextRetrieval,
    LxmertSForPreTraining,
    LxmertSForQuestionAnswering,
    LxmertSForVisualReasoning,
    LxmertSModel,
)

NUM_QA_LABELS = 6


def pretraining(tasks: list[str], **settings) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    model = LxmertSForPreTraining(tiny_config(**{"pretraining_tasks": tasks, **settings})).eval()
    inputs = random_inputs(model.config)
    labels = {**random_labels(model.config, inputs), **alignment_labels(inputs)}
    names = {name for task in tasks for name in PRETRAINING_TASKS[task].head.label_names}
    return model, {**inputs, **{name: labels[name] for name in names}}


def encoder() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    model = LxmertSModel(tiny_config()).eval()
    return model, random_inputs(model.config)


def question_answering() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    model = LxmertSForQuestionAnswering(tiny_config(num_qa_labels=NUM_QA_LABELS)).eval()
    return model, {**random_inputs(model.config), "labels": torch.rand(3, NUM_QA_LABELS)}


def retrieval() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    model = LxmertSForImageTextRetrieval(tiny_config()).eval()
    return model, {**random_inputs(model.config), "labels": torch.tensor([1.0, 0.0, 1.0])}


def visual_reasoning() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    model = LxmertSForVisualReasoning(tiny_config()).eval()
    inputs = random_inputs(model.config)
    for name in ("visual_feats", "visual_pos", "visual_attention_mask"):
        inputs[name] = torch.stack([inputs[name], inputs[name].flip(0)], dim=1)
    return model, {**inputs, "labels": torch.tensor([1, 0, 1])}


MODELS: dict[str, Callable[[], tuple[torch.nn.Module, dict[str, torch.Tensor]]]] = {
    "encoder": encoder,
    "pretraining": lambda: pretraining(EVERY_HEAD),
    "alignment": lambda: pretraining(ALIGNMENT_TASKS),
    "relation": lambda: pretraining(["mlm", "rpt"], **RELATION_SETTINGS),
    "vqa": question_answering,
    "retrieval": retrieval,
    "nlvr2": visual_reasoning,
}


@dataclass
class Case:
    """`change` spoils the batch of `model`; the error starts with `argument` and matches `message`."""

    name: str
    model: str
    change: Callable[[dict[str, torch.Tensor]], None]
    argument: str
    message: str


def put(
    name: str, make: Callable[[torch.Tensor | None], torch.Tensor]
) -> Callable[[dict[str, torch.Tensor]], None]:
    """Set the batch's `name` to `make(what it holds)` (None where it holds nothing)."""

    def change(batch: dict[str, torch.Tensor]) -> None:
        batch[name] = make(batch.get(name))

    return change


def at(value: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """A copy with `value` at its first element."""

    def make(tensor: torch.Tensor) -> torch.Tensor:
        spoiled = tensor.clone()
        spoiled.view(-1)[0] = value
        return spoiled

    return make


def first_row(value: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def make(tensor: torch.Tensor) -> torch.Tensor:
        spoiled = tensor.clone()
        spoiled[0] = value
        return spoiled

    return make


def rows(count: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda tensor: tensor[:count]


def every_input(count: int) -> Callable[[dict[str, torch.Tensor]], None]:
    """Keep the first `count` rows of every input and label (B = 0 with `count` 0)."""

    def change(batch: dict[str, torch.Tensor]) -> None:
        for name in batch:
            batch[name] = batch[name][:count]

    return change


NAN, INF = float("nan"), float("inf")
CASES = [
    # the encoder's inputs
    Case("input ids past the vocabulary", "encoder", put("input_ids", at(40)), "input_ids", r"\[0, 40\)"),
    Case("negative input ids", "encoder", put("input_ids", at(-1)), "input_ids", r"\[0, 40\)"),
    Case("float input ids", "encoder", put("input_ids", torch.Tensor.float), "input_ids", "integer"),
    Case("too long a text", "encoder", put("input_ids", lambda t: t.repeat(1, 4)), "input_ids", "24"),
    Case("1-D input ids", "encoder", put("input_ids", lambda t: t[0]), "input_ids", r"\(batch, length\)"),
    Case("empty batch", "encoder", every_input(0), "input_ids", r"at least one row.*\(0, 8\)"),
    Case("empty text", "encoder", put("input_ids", lambda t: t[:, :0]), "input_ids", r"\(3, 0\)"),
    Case(
        "token type past the table",
        "encoder",
        put("token_type_ids", lambda _: torch.full((3, 8), 2)),
        "token_type_ids",
        r"\[0, 2\)",
    ),  # fmt: skip
    Case("position past the table", "encoder", put("position_ids", at(24)), "position_ids", r"\[0, 24\)"),
    Case("no word positions", "encoder", put("position_ids", lambda _: None), "position_ids", "word"),
    Case(
        "short attention mask",
        "encoder",
        put("attention_mask", lambda t: t[:, :4]),
        "attention_mask",
        r"\(3, 8\).*\(3, 4\)",
    ),  # fmt: skip
    Case(
        "all-padding text row",
        "encoder",
        put("attention_mask", first_row(0)),
        "attention_mask",
        "no real token",
    ),
    Case("attention mask of 2", "encoder", put("attention_mask", at(2)), "attention_mask", "0 or 1"),
    Case("NaN features", "encoder", put("visual_feats", at(NAN)), "visual_feats", "NaN or inf"),
    Case("infinite features", "encoder", put("visual_feats", at(INF)), "visual_feats", "NaN or inf"),
    Case("integer features", "encoder", put("visual_feats", torch.Tensor.long), "visual_feats", "floating"),
    Case(
        "feature size",
        "encoder",
        put("visual_feats", lambda t: t[..., :5]),
        "visual_feats",
        r"12.*\(3, 5, 5\)",
    ),
    Case("feature batch", "encoder", put("visual_feats", rows(2)), "visual_feats", r"\(3, regions, 12\)"),
    Case(
        "no regions",
        "encoder",
        put("visual_feats", lambda t: t[:, :0]),
        "visual_feats",
        "at least one region",
    ),
    Case("NaN box", "encoder", put("visual_pos", at(NAN)), "visual_pos", r"in \[0, 1\]"),
    Case("box past the image", "encoder", put("visual_pos", at(1.5)), "visual_pos", r"in \[0, 1\]"),
    Case("negative box", "encoder", put("visual_pos", at(-0.2)), "visual_pos", r"in \[0, 1\]"),
    Case(
        "box size",
        "encoder",
        put("visual_pos", lambda t: t[..., :3]),
        "visual_pos",
        r"\(3, 5, 4\).*\(3, 5, 3\)",
    ),
    Case("integer boxes", "encoder", put("visual_pos", torch.Tensor.long), "visual_pos", "floating"),
    Case(
        "all-padding region row",
        "encoder",
        put("visual_attention_mask", first_row(0)),
        "visual_attention_mask",
        "no real region",
    ),  # fmt: skip
    Case(
        "region mask batch",
        "encoder",
        put("visual_attention_mask", rows(2)),
        "visual_attention_mask",
        r"\(3, 5\).*\(2, 5\)",
    ),  # fmt: skip
    # the pre-training labels
    Case(
        "MLM label past the vocabulary",
        "pretraining",
        put("mlm_labels", at(40)),
        "mlm_labels",
        r"\[0, 40\) or -100",
    ),  # fmt: skip
    Case("float MLM labels", "pretraining", put("mlm_labels", torch.Tensor.float), "mlm_labels", "int64"),
    Case("MLM label batch", "pretraining", put("mlm_labels", rows(2)), "mlm_labels", r"\(3, 8\).*\(2, 8\)"),
    Case(
        "FLM label past the vocabulary",
        "pretraining",
        put("flm_labels", at(41)),
        "flm_labels",
        r"\[0, 40\) or -100",
    ),  # fmt: skip
    Case(
        "FLM label length",
        "pretraining",
        put("flm_labels", lambda t: t[:, :7]),
        "flm_labels",
        r"\(3, 8\).*\(3, 7\)",
    ),  # fmt: skip
    Case("ITM label of 2", "pretraining", put("itm_labels", at(2)), "itm_labels", r"\[0, 2\) or -100"),
    Case("int32 ITM labels", "pretraining", put("itm_labels", lambda t: t.int()), "itm_labels", "int64"),
    Case("ITM label batch", "pretraining", put("itm_labels", rows(2)), "itm_labels", r"\(3,\).*\(2,\)"),
    Case(
        "object class past the detector's",
        "pretraining",
        put("moc_object_labels", at(7)),
        "moc_object_labels",
        r"\[0, 7\)",
    ),  # fmt: skip
    Case(
        "negative attribute class",
        "pretraining",
        put("moc_attribute_labels", at(-1)),
        "moc_attribute_labels",
        r"\[0, 5\)",
    ),  # fmt: skip
    Case(
        "confidence above 1",
        "pretraining",
        put("moc_object_confidences", at(1.5)),
        "moc_object_confidences",
        r"\[0, 1\]",
    ),  # fmt: skip
    Case(
        "NaN confidence",
        "pretraining",
        put("moc_attribute_confidences", at(NAN)),
        "moc_attribute_confidences",
        r"\[0, 1\]",
    ),  # fmt: skip
    Case("NaN MRFR target", "pretraining", put("mrfr_labels", at(NAN)), "mrfr_labels", "NaN or inf"),
    Case(
        "MRFR target size",
        "pretraining",
        put("mrfr_labels", lambda t: t[..., :6]),
        "mrfr_labels",
        r"\(3, 5, 12\).*\(3, 5, 6\)",
    ),  # fmt: skip
    Case(
        "region mask of 2", "pretraining", put("region_mask", lambda t: t.long() * 2), "region_mask", "0 or 1"
    ),
    Case(
        "region mask batch", "pretraining", put("region_mask", rows(1)), "region_mask", r"\(3, 5\).*\(1, 5\)"
    ),
    Case("infinite IFRS target", "pretraining", put("ifrs_labels", at(INF)), "ifrs_labels", "NaN or inf"),
    Case(
        "IFRS mask regions",
        "pretraining",
        put("ifrs_mask", lambda t: t[:, :4]),
        "ifrs_mask",
        r"\(3, 5\).*\(3, 4\)",
    ),  # fmt: skip
    Case("topic target above 1", "pretraining", put("titp_labels", at(2)), "titp_labels", r"\[0, 1\]"),
    Case(
        "topic targets' vocabulary",
        "pretraining",
        put("tits_labels", lambda t: t[:, :30]),
        "tits_labels",
        r"\(3, 40\).*\(3, 30\)",
    ),  # fmt: skip
    Case("float VSC labels", "pretraining", put("vsc_labels", torch.Tensor.float), "vsc_labels", "integer"),
    Case("image ids batch", "pretraining", put("image_ids", rows(2)), "image_ids", r"\(3,\).*\(2,\)"),
    Case(
        "concept mask length",
        "alignment",
        put("wpg_concept_mask", lambda t: t[:, :5]),
        "wpg_concept_mask",
        r"\(3, 8\).*\(3, 5\)",
    ),  # fmt: skip
    Case(
        "mined ITM with a mismatched row", "alignment", put("itm_labels", at(0)), "itm_labels", "matched pair"
    ),
    Case(
        "tag targets' regions",
        "pretraining",
        put("tag_targets", lambda t: t[..., :2]),
        "tag_targets",
        r"\(3, 8, \d+\).*\(3, 8, 2\)",
    ),  # fmt: skip
    Case(
        "RPT targets' regions",
        "relation",
        put("relation_targets", lambda t: t[:, :2]),
        "relation_targets",
        r"\(3, 5\).*\(3, 2\)",
    ),
    Case(
        "RPT question length",
        "relation",
        put("relation_input_ids", lambda t: t[:, :5]),
        "relation_input_ids",
        r"\(3, 8\).*\(3, 5\)",
    ),
    Case(
        "RPT question as floats",
        "relation",
        put("relation_input_ids", torch.Tensor.float),
        "relation_input_ids",
        "integer",
    ),
    Case(
        "WBR mask length",
        "pretraining",
        put("wbr_mask", lambda t: t[:, :5]),
        "wbr_mask",
        r"\(3, 8\).*\(3, 5\)",
    ),
    Case("WBR box outside the image", "pretraining", put("wbr_targets", at(1.5)), "wbr_targets", r"\[0, 1\]"),
    Case("WBR boxes as ids", "pretraining", put("wbr_targets", torch.Tensor.long), "wbr_targets", "floating"),
    # the downstream labels
    Case(
        "VQA score above 1",
        "vqa",
        put("labels", at(1.5)),
        "labels",
        r"soft answer scores must be in \[0, 1\]",
    ),
    Case("negative VQA score", "vqa", put("labels", at(-0.5)), "labels", r"\[0, 1\]"),
    Case("VQA answers", "vqa", put("labels", lambda t: t[:, :4]), "labels", r"\(3, 6\).*\(3, 4\)"),
    Case("retrieval target 1.5", "retrieval", put("labels", at(1.5)), "labels", r"\[0, 1\]"),
    Case("retrieval label batch", "retrieval", put("labels", rows(2)), "labels", r"\(3,\).*\(2,\)"),
    Case("NLVR2 label of 2", "nlvr2", put("labels", at(2)), "labels", r"\[0, 2\)"),
    Case("float NLVR2 labels", "nlvr2", put("labels", torch.Tensor.float), "labels", "int64"),
    Case(
        "NLVR2 without the pair axis",
        "nlvr2",
        put("visual_feats", lambda t: t[:, 0]),
        "visual_feats",
        r"\(3, 2, regions, 12\)",
    ),  # fmt: skip
    Case("NaN NLVR2 features", "nlvr2", put("visual_feats", at(NAN)), "visual_feats", "NaN or inf"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_bad_input_gives_an_error_naming_it(case):
    model, batch = MODELS[case.model]()
    case.change(batch)
    pattern = rf"^{re.escape(case.argument)}: .*{case.message}"
    with torch.no_grad(), pytest.raises((ValueError, RuntimeError), match=pattern):
        model(**batch)


def test_the_table_covers_every_model_and_each_label():
    assert {case.model for case in CASES} == set(MODELS)
    labels = {name for task in PRETRAINING_TASKS.values() for name in task.head.label_names}
    assert labels <= {case.argument for case in CASES}


def test_itm_labels_that_are_all_ignored_train_no_itm():
    model, batch = pretraining(["mlm", "itm"])
    batch["itm_labels"] = torch.full_like(batch["itm_labels"], -100)
    model.train()
    output = model(**batch)
    assert output.losses["itm"].item() == 0.0
    assert torch.isfinite(output.loss)
    output.loss.backward()
    assert model.heads["itm"].classifier.weight.grad.abs().sum() == 0
    # one row kept: the loss is that row's, not diluted by the ignored ones
    batch["itm_labels"][1] = 0
    with torch.no_grad():
        one = model.eval()(**batch).losses["itm"]
        alone = model(**{name: value[1:2] for name, value in batch.items()}).losses["itm"]
    assert torch.allclose(one, alone, atol=1e-5)


def test_value_checks_can_be_switched_off():
    model, batch = encoder()
    batch["visual_feats"][0, 0, 0] = float("nan")
    model.config.check_input_values = False
    with torch.no_grad():
        pooled = model(**batch).pooled_output
    assert pooled[0].isnan().all() and not pooled[1:].isnan().any()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=["float64", "float16"])
def test_region_inputs_of_another_floating_dtype_are_cast_to_the_weights_dtype(dtype):
    """As transformers' vision models cast `pixel_values`: float64 features and boxes (numpy's) and float16
    ones (a feature store's) give what the same values in float32 give, in the forward pass and the
    features."""
    model, batch = pretraining(ALIGNMENT_TASKS)  # carries the VSC head
    inputs = {name: batch[name] for name in random_inputs(model.config)}
    given = {name: inputs[name].to(dtype) for name in ("visual_feats", "visual_pos")}
    as_float32 = {name: value.float() for name, value in given.items()}
    with torch.no_grad():
        ours, reference = model(**{**inputs, **given}), model(**{**inputs, **as_float32})
        features = model.get_image_features(**given).pooler_output
        reference_features = model.get_image_features(**as_float32).pooler_output
    assert ours.itm_logits.dtype == torch.float32
    assert torch.equal(ours.itm_logits, reference.itm_logits)
    assert torch.equal(features, reference_features)
