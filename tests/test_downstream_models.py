"""Downstream models: VQA/GQA answer head, NLVR2 pairing, retrieval score from the pre-trained ITM head,
loading from a pre-training checkpoint, and saved folders that load without the package."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from model_inputs import random_inputs, tiny_config
from safetensors.torch import load_file, save_file
from torch.nn import functional as F
from transformers import AutoModelForQuestionAnswering, LxmertConfig
from transformers.models.lxmert.modeling_lxmert import LxmertVisualAnswerHead

from modeling_lxmert_s import (
    LxmertSForImageTextRetrieval,
    LxmertSForPreTraining,
    LxmertSForQuestionAnswering,
    LxmertSForVisualReasoning,
)

NUM_ANSWERS = 6


def _config(**overrides):
    return tiny_config(num_qa_labels=NUM_ANSWERS, **overrides)


def _image_pair_inputs(config) -> dict[str, torch.Tensor]:
    """NLVR2 inputs: the text of one `random_inputs` draw, and two different images per sentence."""
    first, second = random_inputs(config, seed=0), random_inputs(config, seed=2)
    second["visual_attention_mask"][0, -1] = 0  # the two images of an example are padded differently
    inputs = {name: first[name] for name in ("input_ids", "attention_mask", "position_ids")}
    for name in ("visual_feats", "visual_pos", "visual_attention_mask"):
        inputs[name] = torch.stack([first[name], second[name]], dim=1)
    return inputs


def _image(inputs: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """One (sentence, image) input per example: the NLVR2 inputs' image `index`."""
    return {
        name: tensor[:, index] if name.startswith("visual") else tensor for name, tensor in inputs.items()
    }


@pytest.fixture(scope="module")
def pretraining_checkpoint(tmp_path_factory):
    """A saved pre-training model carrying every task head, ITM included."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("pretraining")
    LxmertSForPreTraining(_config()).save_pretrained(folder)
    return folder


# ---- question answering --------------------------------------------------------------------------


def test_question_answering_logits_and_loss_by_hand():
    config = _config()
    model = LxmertSForQuestionAnswering(config).eval()
    inputs = random_inputs(config)
    labels = torch.zeros(3, NUM_ANSWERS)
    labels[0, 1], labels[0, 4], labels[1, 2], labels[2, 0] = 1.0, 0.3, 0.6, 1.0  # VQA soft scores
    with torch.no_grad():
        output = model(**inputs, labels=labels)
        pooled = model.lxmert(**inputs).pooled_output
        without_labels = model(**inputs)
    assert output.logits.shape == (3, NUM_ANSWERS)
    assert torch.allclose(output.logits, model.answer_head(pooled), atol=1e-6)
    assert without_labels.loss is None
    total = 0.0
    for b in range(3):
        for a in range(NUM_ANSWERS):
            p, y = torch.sigmoid(output.logits[b, a]).item(), labels[b, a].item()
            total -= y * math.log(p) + (1 - y) * math.log(1 - p)
    # LXMERT's scaling: mean over batch x answers, times the number of answers
    assert math.isclose(output.loss.item(), total / 3, rel_tol=1e-5)


def test_answer_head_takes_transformers_lxmert_answer_head_weights_by_key():
    lxmert_config = LxmertConfig(hidden_size=16, num_attention_heads=2, num_qa_labels=NUM_ANSWERS)
    reference = LxmertVisualAnswerHead(lxmert_config, NUM_ANSWERS).eval()
    model = LxmertSForQuestionAnswering(_config()).eval()
    ours = {name for name in model.state_dict() if name.startswith("answer_head.")}
    assert ours == {f"answer_head.{name}" for name in reference.state_dict()}
    model.answer_head.load_state_dict(reference.state_dict())
    pooled = torch.randn(4, 16)
    with torch.no_grad():
        assert torch.allclose(model.answer_head(pooled), reference(pooled), atol=1e-6)


# ---- NLVR2 -----------------------------------------------------------------------------------------


def test_visual_reasoning_concatenates_each_images_pooled_output_in_order():
    config = _config()
    model = LxmertSForVisualReasoning(config).eval()
    inputs = _image_pair_inputs(config)
    swapped = {
        name: tensor.flip(1) if name.startswith("visual") else tensor for name, tensor in inputs.items()
    }
    labels = torch.tensor([1, 0, 1])
    with torch.no_grad():
        output = model(**inputs, labels=labels)
        swapped_logits = model(**swapped).logits
        first = model.lxmert(**_image(inputs, 0)).pooled_output
        second = model.lxmert(**_image(inputs, 1)).pooled_output
        expected = model.classifier(torch.cat([first, second], dim=-1))
        expected_swapped = model.classifier(torch.cat([second, first], dim=-1))
    assert output.logits.shape == (3, 2)
    assert torch.allclose(output.logits, expected, atol=1e-5)
    assert torch.allclose(swapped_logits, expected_swapped, atol=1e-5)
    assert not torch.allclose(swapped_logits, output.logits, atol=1e-3)
    terms = [-F.log_softmax(output.logits[b], -1)[labels[b]] for b in range(3)]
    assert torch.allclose(output.loss, torch.stack(terms).mean(), atol=1e-6)


# ---- retrieval -------------------------------------------------------------------------------------


def test_retrieval_score_from_a_pretraining_checkpoint_is_the_itm_match_score(pretraining_checkpoint):
    pretrained = LxmertSForPreTraining.from_pretrained(pretraining_checkpoint).eval()
    retrieval = LxmertSForImageTextRetrieval.from_pretrained(pretraining_checkpoint).eval()
    inputs = random_inputs(pretrained.config, batch=6, seed=3)
    labels = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    with torch.no_grad():
        itm_logits = pretrained(**inputs).itm_logits
        output = retrieval(**inputs, labels=labels)
    match_probability = itm_logits.softmax(-1)[:, 1]
    assert output.logits.shape == (6,)
    assert torch.allclose(output.logits, itm_logits[:, 1] - itm_logits[:, 0], atol=1e-5)
    assert torch.allclose(torch.sigmoid(output.logits), match_probability, atol=1e-6)
    assert torch.equal(output.logits.argsort(), match_probability.argsort())
    terms = [
        -math.log(p) if y else -math.log(1 - p)
        for p, y in zip(match_probability.tolist(), labels.tolist(), strict=True)
    ]
    assert math.isclose(output.loss.item(), sum(terms) / 6, rel_tol=1e-5)


def test_retrieval_model_loads_the_vsc_head_and_embeds_as_the_pretraining_model(pretraining_checkpoint):
    pretrained = LxmertSForPreTraining.from_pretrained(pretraining_checkpoint).eval()
    retrieval, loading = LxmertSForImageTextRetrieval.from_pretrained(
        pretraining_checkpoint, output_loading_info=True
    )
    retrieval.eval()
    assert loading["missing_keys"] == set()  # heads.vsc and heads.itm both come from the checkpoint
    saved = load_file(pretraining_checkpoint / "model.safetensors")
    for name, tensor in retrieval.heads["vsc"].state_dict().items():
        assert torch.equal(tensor, saved[f"heads.vsc.{name}"]), name
    inputs = random_inputs(pretrained.config, batch=4, seed=5)
    text = {name: inputs[name] for name in ("input_ids", "attention_mask", "position_ids")}
    image = {name: inputs[name] for name in ("visual_feats", "visual_pos", "visual_attention_mask")}
    with torch.no_grad():
        for features, inputs in (("get_text_features", text), ("get_image_features", image)):
            ours, theirs = getattr(retrieval, features)(**inputs), getattr(pretrained, features)(**inputs)
            assert torch.equal(ours.pooler_output, theirs.pooler_output)
            assert torch.equal(ours.last_hidden_state, theirs.last_hidden_state)
    assert retrieval.has_contrastive_features

    without = LxmertSForImageTextRetrieval(_config(pretraining_tasks=["mlm", "itm"]))
    assert list(without.heads) == ["itm"] and not without.has_contrastive_features
    with pytest.raises(ValueError, match="come from the VSC head; this model carries \\['itm'\\]"):
        without.get_text_features(**text)


# ---- loading from pre-training ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_class", "head"),
    [(LxmertSForQuestionAnswering, "answer_head"), (LxmertSForVisualReasoning, "classifier")],
)
def test_a_pretraining_checkpoint_gives_the_encoder_and_a_fresh_head(
    pretraining_checkpoint, model_class, head
):
    pretrained = LxmertSForPreTraining.from_pretrained(pretraining_checkpoint).eval()
    model, loading = model_class.from_pretrained(pretraining_checkpoint, output_loading_info=True)
    model.eval()
    head_keys = {name for name in model.state_dict() if name.startswith(f"{head}.")}
    # the head is expected to start fresh: the model names it, and the loading info lists its keys missing
    assert model.fresh_parameters == head_keys == loading["missing_keys"]
    encoder = pretrained.lxmert.state_dict()
    for name, tensor in model.lxmert.state_dict().items():
        assert torch.equal(tensor, encoder[name]), name
    inputs = random_inputs(model.config)
    with torch.no_grad():  # the unsaved visual [CLS] box buffer is set too
        assert torch.equal(model.lxmert(**inputs).pooled_output, pretrained.lxmert(**inputs).pooled_output)
    first, _, norm, last = getattr(model, head).logit_fc
    assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and not norm.bias.any()
    for linear in (first, last):
        assert not linear.bias.any()
        assert 0.01 < linear.weight.std().item() < 0.03  # initializer_range 0.02


def test_the_package_registers_question_answering_with_the_auto_class(pretraining_checkpoint):
    model = AutoModelForQuestionAnswering.from_pretrained(pretraining_checkpoint)
    assert type(model) is LxmertSForQuestionAnswering
    assert model.answer_head.logit_fc[-1].out_features == NUM_ANSWERS


@pytest.mark.parametrize(
    "model_class", [LxmertSForQuestionAnswering, LxmertSForVisualReasoning, LxmertSForImageTextRetrieval]
)
def test_each_task_loss_reaches_the_encoder(model_class):
    config = _config()
    model = model_class(config).train()
    if model_class is LxmertSForVisualReasoning:
        inputs, labels = _image_pair_inputs(config), torch.tensor([1, 0, 1])
    elif model_class is LxmertSForQuestionAnswering:
        inputs, labels = random_inputs(config), torch.rand(3, NUM_ANSWERS)
    else:
        inputs, labels = random_inputs(config), torch.tensor([1.0, 0.0, 0.0])
    model(**inputs, labels=labels).loss.backward()
    for parameter in (
        model.lxmert.encoder.x_layers[0].visual_attention.att.query.weight,
        model.lxmert.encoder.visn_fc.visn_fc.weight,
    ):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


# ---- saved folders without the package -------------------------------------------------------------

# A fresh interpreter whose import of modeling_lxmert_s fails, run from a folder outside the repo.
ISOLATED_LOAD = textwrap.dedent(
    """
    import sys
    sys.modules["modeling_lxmert_s"] = sys.modules["lxmert_s_msp"] = sys.modules["faster_rcnn_vg"] = None
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel, AutoModelForQuestionAnswering

    folder, out_file = sys.argv[1:]
    logits = {}
    for task, auto_class, class_name in (
        ("qa", AutoModelForQuestionAnswering, "LxmertSForQuestionAnswering"),
        ("nlvr2", AutoModel, "LxmertSForVisualReasoning"),
        ("retrieval", AutoModel, "LxmertSForImageTextRetrieval"),
    ):
        model = auto_class.from_pretrained(f"{folder}/{task}", trust_remote_code=True).eval()
        assert type(model).__name__ == class_name, type(model)
        assert "modeling_lxmert_s" not in type(model).__module__.split(".")[0]
        inputs = load_file(f"{folder}/{task}_inputs.safetensors")
        with torch.no_grad():
            logits[task] = model(**inputs).logits
    save_file(logits, out_file)
    """
)


def test_saved_task_models_load_through_the_auto_classes_without_the_package(tmp_path):
    config = _config()
    models = {
        "qa": LxmertSForQuestionAnswering(config).eval(),
        "nlvr2": LxmertSForVisualReasoning(config).eval(),
        "retrieval": LxmertSForImageTextRetrieval(config).eval(),
    }
    expected = {}
    for task, model in models.items():
        model.save_pretrained(tmp_path / task)
        inputs = _image_pair_inputs(config) if task == "nlvr2" else random_inputs(config)
        save_file(inputs, str(tmp_path / f"{task}_inputs.safetensors"))
        with torch.no_grad():
            expected[task] = model(**inputs).logits
        for code in ("configuration_lxmert_s.py", "modeling_lxmert_s.py", "pretraining_pieces.py"):
            assert (tmp_path / task / code).is_file(), (task, code)

    def auto_map(task: str) -> dict[str, str]:
        return json.loads((tmp_path / task / "config.json").read_text())["auto_map"]

    qa_map = auto_map("qa")
    assert qa_map["AutoModelForQuestionAnswering"] == "modeling_lxmert_s.LxmertSForQuestionAnswering"
    assert qa_map["AutoModel"] == "modeling_lxmert_s.LxmertSModel"
    assert auto_map("nlvr2")["AutoModel"] == "modeling_lxmert_s.LxmertSForVisualReasoning"
    assert auto_map("retrieval")["AutoModel"] == "modeling_lxmert_s.LxmertSForImageTextRetrieval"

    script = tmp_path / "load.py"
    script.write_text(ISOLATED_LOAD)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(tmp_path / "logits.safetensors")],
        cwd=outside,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = load_file(str(tmp_path / "logits.safetensors"))
    for task, logits in expected.items():
        assert torch.allclose(loaded[task], logits, atol=1e-6), task


# ---- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda i: i.update(visual_feats=i["visual_feats"][:, 0]),
            r"visual_feats.*\(3, 2, regions, 12\).*received \(3, 5, 12\)",
        ),
        (
            lambda i: i.update(visual_feats=torch.cat([i["visual_feats"], i["visual_feats"][:, :1]], 1)),
            r"visual_feats.*\(3, 2, regions, 12\).*received \(3, 3, 5, 12\)",
        ),
        (
            lambda i: i.update(visual_pos=i["visual_pos"][..., :3]),
            r"visual_pos.*\(3, 2, 5, 4\).*received \(3, 2, 5, 3\)",
        ),
        (
            lambda i: i.update(visual_attention_mask=i["visual_attention_mask"][:, 0]),
            r"visual_attention_mask.*\(3, 2, 5\).*received \(3, 5\)",
        ),
        (
            lambda i: i.update(labels=torch.zeros(3, 2, dtype=torch.long)),
            r"labels.*\(3,\).*received \(3, 2\)",
        ),
    ],
)
def test_visual_reasoning_refuses_inputs_without_the_image_pair_axis(change, message):
    config = _config()
    model = LxmertSForVisualReasoning(config).eval()
    inputs = _image_pair_inputs(config)
    change(inputs)
    with pytest.raises(ValueError, match=message):
        model(**inputs)


@pytest.mark.parametrize(
    ("model_class", "labels", "message"),
    [
        (LxmertSForQuestionAnswering, torch.zeros(3), r"labels.*\(3, 6\).*received \(3,\)"),
        (LxmertSForImageTextRetrieval, torch.zeros(3, 1), r"labels.*\(3,\).*received \(3, 1\)"),
    ],
)
def test_labels_of_the_wrong_shape_are_refused(model_class, labels, message):
    config = _config()
    model = model_class(config).eval()
    with pytest.raises(ValueError, match=message):
        model(**random_inputs(config), labels=labels)


def test_config_refuses_an_empty_answer_vocabulary():
    with pytest.raises(Exception, match="num_qa_labels"):
        _config(num_qa_labels=0)
