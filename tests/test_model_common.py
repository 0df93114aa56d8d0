"""What transformers' common model and config tests check, checked here on the LXMERT-S models.

transformers runs `ModelTesterMixin` and `ConfigTester` (`tests/test_modeling_common.py`, which its pip
package does not ship) on each of its models; these are this project's versions of the checks that concern a
model like LXMERT-S, run on the encoder, the pre-training model and the downstream models, in the default
(released LXMERT-S) setting and the LXMERT-compatible one (`LxmertSConfig.from_lxmert_config`).

`LxmertSForVisualReasoning` reads a pair of images per row, which the shared inputs do not fit; its own
tests are in tests/test_downstream_models.py. Run against the others (tests/transformers_mixin.py runs it, on
request), the mixin of transformers 5.25 passes but for the checks below, which cannot apply to LXMERT-S as
written; each is checked here in the form that does:
- `test_hidden_states_output`, `test_attention_outputs`, `test_retain_grad_hidden_states_attentions` read
  `outputs.hidden_states` / `outputs.attentions`; LXMERT-S names them per modality, as LXMERT does
  (`language_hidden_states`, `vision_hidden_states`, `language_attentions`, ...), and these are transformers'
  own `LxmertModelTest`'s versions of the three, which read those.
- `test_get_text_features_output_{0,2}` read the hidden size from `config.text_config`, which only a
  composite config (CLIP's) has; LXMERT-S has one config, as LXMERT: the same shape is checked against
  `hidden_size`.
- `test_get_{text,image}_features_{hidden_states,attentions}` expect one attention per `num_hidden_layers`
  unless a model's test sets its own count (the mixin's `_text_features_get_expected_num_attentions` hooks):
  the VSC features read the inputs of the first cross-modality layer, LXMERT-S having no layer of one
  modality, so they pass no layer: one hidden state, no attention. `test_get_image_features_output` reads the
  batch size from `pixel_values`; LXMERT-S reads region features (`visual_feats`).
- `test_training` and `test_training_gradient_checkpointing*` skip base models by transformers' own table of
  its models (`MODEL_MAPPING_NAMES`), which a model outside transformers is not in: they then ask
  `LxmertSModel`, which has no loss, for one. They check that every parameter gets a gradient, which two
  parameter groups cannot (the mixin's `test_all_params_have_gradient = False`): in the LXMERT-compatible
  setting the heads read the language [CLS] alone, so the last layer's vision-side sublayers feed nothing
  they read (as in LXMERT), and the retrieval model's VSC head is not trained by fine-tuning.
- `test_eager_matches_sdpa_inference` passes the model's inputs other than `input_ids` through the mixin's
  `additional_model_inputs`, and pads a batch with random integers, which a 0/1 `visual_attention_mask`
  refuses.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from model_inputs import (
    alignment_labels,
    random_inputs,
    random_labels,
    task_settings,
    tiny_config,
    tiny_lxmert_compatible_config,
)
from safetensors.torch import load_file, save_file
from torch.nn import functional as F
from transformers import (
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForVisualQuestionAnswering,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

from modeling_lxmert_s import (
    PRETRAINING_TASKS,
    LxmertSConfig,
    LxmertSForImageTextRetrieval,
    LxmertSForPreTraining,
    LxmertSForQuestionAnswering,
    LxmertSModel,
)

NUM_QA_LABELS = 6
SETTINGS = {
    "default": lambda **overrides: tiny_config(num_qa_labels=NUM_QA_LABELS, **overrides),
    "lxmert": lambda **overrides: tiny_lxmert_compatible_config(num_qa_labels=NUM_QA_LABELS, **overrides),
}
MODEL_CLASSES = [
    LxmertSModel,
    LxmertSForPreTraining,
    LxmertSForQuestionAnswering,
    LxmertSForImageTextRetrieval,
]
CASES = [(model_class, setting) for model_class in MODEL_CLASSES for setting in SETTINGS]
CASE_IDS = [f"{model_class.__name__}-{setting}" for model_class, setting in CASES]


def case_labels(model, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Labels of every loss the model computes."""
    batch = len(inputs["input_ids"])
    generator = torch.Generator().manual_seed(3)
    if isinstance(model, LxmertSForPreTraining):
        labels = random_labels(model.config, inputs)
        names = {
            name
            for task in model.config.pretraining_tasks
            for name in PRETRAINING_TASKS[task].head.label_names
        }
        return {name: labels[name] for name in names}
    if isinstance(model, LxmertSForQuestionAnswering):
        return {"labels": torch.rand(batch, NUM_QA_LABELS, generator=generator)}
    if isinstance(model, LxmertSForImageTextRetrieval):
        return {"labels": torch.tensor([1.0, 0.0, 1.0])[:batch]}
    return {}


def build(model_class, setting: str, **overrides):
    torch.manual_seed(0)
    model = model_class(SETTINGS[setting](**overrides)).eval()
    return model, random_inputs(model.config)


def assert_same(ours, theirs, atol: float = 0.0) -> None:
    """Equal tensors, at any depth of tuples and dicts (`losses`)."""
    if isinstance(ours, dict):
        assert ours.keys() == theirs.keys()
        for name in ours:
            assert_same(ours[name], theirs[name], atol)
    elif isinstance(ours, (tuple, list)):
        assert len(ours) == len(theirs)
        for one, other in zip(ours, theirs, strict=True):
            assert_same(one, other, atol)
    else:
        assert torch.allclose(ours, theirs, atol=atol), (ours - theirs).abs().max()


# ---- config (transformers' ConfigTester) ---------------------------------------------------------------


@pytest.mark.parametrize("setting", SETTINGS)
def test_config_has_the_common_properties(setting, tmp_path):
    config = SETTINGS[setting]()
    assert config.num_hidden_layers == config.num_layers == 2
    # transformers' values: each property set to its index in this list
    for value, name in enumerate(("hidden_size", "num_attention_heads", "num_hidden_layers", "vocab_size")):
        setattr(config, name, value)
        assert getattr(config, name) == value, name
        assert getattr(LxmertSConfig(**{name: value}), name) == value, name
    assert config.num_layers == 2  # num_hidden_layers is num_layers under transformers' common name

    config = SETTINGS[setting]()
    assert json.loads(config.to_json_string())["num_layers"] == 2
    config.to_json_file(tmp_path / "config.json")
    assert LxmertSConfig.from_json_file(tmp_path / "config.json").to_dict() == config.to_dict()
    config.save_pretrained(tmp_path / "saved")
    assert LxmertSConfig.from_pretrained(tmp_path / "saved").to_dict() == config.to_dict()


def test_config_takes_the_common_arguments():
    config = LxmertSConfig(num_labels=5, problem_type="regression", architectures=["LxmertSModel"])
    assert len(config.id2label) == len(config.label2id) == 5
    config.num_labels = 3
    assert len(config.id2label) == len(config.label2id) == 3
    assert config.problem_type == "regression" and config.architectures == ["LxmertSModel"]
    assert LxmertSConfig().num_hidden_layers == 5


# ---- outputs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model_class", "setting"), CASES, ids=CASE_IDS)
def test_outputs_are_deterministic_and_lead_with_a_tensor(model_class, setting):
    model, inputs = build(model_class, setting)
    with torch.no_grad():
        first, second = model(**inputs)[0], model(**inputs)[0]
    assert isinstance(first, torch.Tensor)
    assert torch.equal(first, second)


def test_pretraining_inference_returns_the_heads_predictions_and_no_loss():
    model, inputs = build(LxmertSForPreTraining, "lxmert")  # LXMERT's heads: MLM, MRFR, MOC, ITM
    labels = case_labels(model, inputs)
    batch, length = inputs["input_ids"].shape
    regions = inputs["visual_feats"].shape[1]
    config = model.config
    with torch.no_grad():
        inference = model(**inputs)
        training = model(**inputs, **labels)
        asked = model(**inputs, **labels, output_predictions=True)
    assert "loss" not in inference and "losses" not in inference
    assert list(inference)[:5] == [
        "prediction_logits",
        "itm_logits",
        "object_logits",
        "attribute_logits",
        "region_feature_predictions",
    ]
    assert inference.prediction_logits.shape == (batch, length, config.vocab_size)
    assert inference.object_logits.shape == (batch, regions, config.num_object_labels)
    assert inference.attribute_logits.shape == (batch, regions, config.num_attr_labels)
    assert inference.region_feature_predictions.shape == (batch, regions, config.visual_feat_dim)
    # the predictions are those the losses score
    chosen = labels["mlm_labels"] != -100
    mlm = F.cross_entropy(inference.prediction_logits[chosen], labels["mlm_labels"][chosen])
    assert torch.allclose(training.losses["mlm"], mlm, atol=1e-5)
    moc = sum(
        (
            F.cross_entropy(logits.flatten(0, 1), labels[f"moc_{kind}_labels"].flatten(), reduction="none")
            * labels[f"moc_{kind}_confidences"].flatten()
        ).mean()
        for kind, logits in (("object", inference.object_logits), ("attribute", inference.attribute_logits))
    )
    assert torch.allclose(training.losses["moc"], moc * config.visual_loss_normalizer, atol=1e-5)
    masked = labels["region_mask"]
    per_region = F.smooth_l1_loss(
        inference.region_feature_predictions[masked], labels["mrfr_labels"][masked], reduction="none"
    ).mean(-1)
    mrfr = per_region.sum() / masked.numel() * config.visual_loss_normalizer
    assert torch.allclose(training.losses["mrfr"], mrfr, atol=1e-5)
    # with labels, nothing vocabulary-sized is computed unless asked
    assert training.prediction_logits is None and training.object_logits is None
    assert torch.allclose(asked.prediction_logits, inference.prediction_logits, atol=1e-6)
    assert torch.equal(asked.loss, training.loss)


@pytest.mark.parametrize("with_labels", [False, True], ids=["inference", "labels"])
@pytest.mark.parametrize(("model_class", "setting"), CASES, ids=CASE_IDS)
def test_tuple_and_dict_outputs_agree(model_class, setting, with_labels):
    model, inputs = build(model_class, setting)
    inputs |= case_labels(model, inputs) if with_labels else {}
    for flags in (
        {},
        {"output_hidden_states": True},
        {"output_attentions": True},
        {"output_hidden_states": True, "output_attentions": True},
    ):
        with torch.no_grad():
            as_tuple = model(**inputs, **flags, return_dict=False)
            as_dict = model(**inputs, **flags, return_dict=True)
        assert isinstance(as_tuple, tuple)
        assert_same(as_tuple, as_dict.to_tuple())
        assert ("loss" in as_dict) == (with_labels and model_class is not LxmertSModel)


# transformers' config refuses output_attentions=True under SDPA
@pytest.mark.parametrize(
    ("attention", "asked_by"), [("sdpa", "argument"), ("eager", "argument"), ("eager", "config")]
)
@pytest.mark.parametrize(("model_class", "setting"), CASES, ids=CASE_IDS)
def test_attentions_and_hidden_states_come_last_one_per_layer(model_class, setting, attention, asked_by):
    """transformers' `test_attention_outputs` and `test_hidden_states_output` (LXMERT's versions): asked
    for by argument or by the config, one per layer (and the embeddings), last in the tuple."""
    model, inputs = build(model_class, setting)
    model.set_attn_implementation(attention)
    batch, length = inputs["input_ids"].shape
    regions = inputs["visual_feats"].shape[1] + model.config.visual_cls_token
    heads, layers = model.config.num_attention_heads, model.config.num_hidden_layers

    def run(**flags: bool) -> tuple:
        if asked_by == "argument":
            return model(**inputs, **flags, return_dict=False)
        model.config.output_attentions = flags.get("output_attentions", False)
        model.config.output_hidden_states = flags.get("output_hidden_states", False)
        model.config.return_dict = False
        return model(**inputs)

    with torch.no_grad():
        plain = run()
        with_attentions = run(output_attentions=True)
        with_states = run(output_hidden_states=True)
        with_both = run(output_attentions=True, output_hidden_states=True)
    assert len(with_attentions) == len(with_states) + 1 == len(plain) + 3 and len(with_both) == len(plain) + 5
    assert len(with_states[-2]) == len(with_states[-1]) == layers + 1
    assert len(with_attentions[-3]) == len(with_attentions[-1]) == layers
    language, vision, cross = with_both[-3:]
    assert len(language) == len(vision) == len(cross) == layers
    assert language[0].shape == (batch, heads, length, length)
    assert vision[0].shape == (batch, heads, regions, regions)
    assert cross[0].shape == (batch, heads, length, regions)
    language_states, vision_states = with_both[-5:-3]
    assert len(language_states) == len(vision_states) == layers + 1
    assert language_states[0].shape[1:] == (length, model.config.hidden_size)
    assert vision_states[-1].shape[1:] == (regions, model.config.hidden_size)


@pytest.mark.parametrize("setting", SETTINGS)
def test_gradients_reach_the_first_hidden_states_and_attentions(setting):
    """transformers' `test_retain_grad_hidden_states_attentions` (LXMERT's version)."""
    model, inputs = build(LxmertSModel, setting)
    model.set_attn_implementation("eager")
    model.config.output_hidden_states = model.config.output_attentions = True
    output = model(**inputs)
    kept = [
        output.language_hidden_states[0],
        output.vision_hidden_states[0],
        output.language_attentions[0],
        output.vision_attentions[0],
        output.cross_encoder_attentions[0],
    ]
    for tensor in kept:
        tensor.retain_grad()
    (output.language_output.sum() + output.vision_output.sum()).backward()
    assert all(tensor.grad is not None and tensor.grad.abs().sum() > 0 for tensor in kept)


@pytest.mark.parametrize(("model_class", "setting"), CASES, ids=CASE_IDS)
def test_every_model_with_a_loss_trains(model_class, setting):
    """transformers' `test_training`: a finite loss whose gradient reaches the encoder and the heads (the
    module docstring says which parameters the mixin's stricter check cannot expect a gradient for)."""
    model, inputs = build(model_class, setting)
    labels = case_labels(model, inputs)
    if not labels:  # the encoder has no loss
        assert "loss" not in model(**inputs)
        return
    output = model.train()(**inputs, **labels)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    trained = {name for name, parameter in model.named_parameters() if parameter.grad is not None}
    assert "lxmert.embeddings.word_embeddings.weight" in trained
    assert "lxmert.encoder.visn_fc.visn_fc.weight" in trained
    heads = {name.split(".")[0] for name in trained} - {"lxmert"}
    assert heads == ({"answer_head"} if model_class is LxmertSForQuestionAnswering else {"heads"})


@pytest.mark.parametrize("output_attentions", [False, True])
@pytest.mark.parametrize(("model_class", "setting"), CASES, ids=CASE_IDS)
def test_eager_and_sdpa_agree(model_class, setting, output_attentions, tmp_path):
    model, inputs = build(model_class, setting)
    model.save_pretrained(tmp_path)
    sdpa = model_class.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    eager = model_class.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    flags = {"output_hidden_states": True, "output_attentions": output_attentions}
    with torch.no_grad():
        ours, reference = sdpa(**inputs, **flags), eager(**inputs, **flags)
    assert_same(ours.vision_hidden_states, reference.vision_hidden_states, atol=1e-5)
    assert_same(ours.to_tuple(), reference.to_tuple(), atol=1e-5)


@pytest.mark.parametrize(("model_class", "setting"), CASES, ids=CASE_IDS)
def test_a_batch_gives_what_its_rows_give_alone(model_class, setting):
    model, inputs = build(model_class, setting)
    with torch.no_grad():
        batched = model(**inputs)
        rows = [model(**{name: tensor[i : i + 1] for name, tensor in inputs.items()}) for i in range(3)]
    for name, value in batched.items():
        assert_same(value, torch.cat([row[name] for row in rows]), atol=1e-5)


# ---- save / load, Auto classes, what loading reports -----------------------------------------------------


@pytest.mark.parametrize(("model_class", "setting"), CASES, ids=CASE_IDS)
def test_save_and_load_give_the_same_model(model_class, setting, tmp_path):
    model, inputs = build(model_class, setting)
    model.save_pretrained(tmp_path)
    loaded, loading = model_class.from_pretrained(tmp_path, output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"] and not loaded.fresh_parameters
    with torch.no_grad():
        assert_same(loaded.eval()(**inputs).to_tuple(), model(**inputs).to_tuple())


def test_the_auto_classes_build_each_model(tmp_path):
    LxmertSForPreTraining(SETTINGS["default"]()).save_pretrained(tmp_path)
    assert type(AutoModel.from_pretrained(tmp_path)) is LxmertSModel
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is LxmertSForPreTraining
    # LXMERT's Auto class and ViLT's
    assert type(AutoModelForQuestionAnswering.from_pretrained(tmp_path)) is LxmertSForQuestionAnswering
    assert type(AutoModelForVisualQuestionAnswering.from_pretrained(tmp_path)) is LxmertSForQuestionAnswering


def test_loading_another_models_checkpoint_says_which_heads_start_fresh_in_one_line(tmp_path, caplog, capfd):
    config = SETTINGS["default"](pretraining_tasks=["mlm", "mrfr", "itm"])
    LxmertSForPreTraining(config).save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING):
        encoder, encoder_loading = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
        stage, stage_loading = LxmertSForPreTraining.from_pretrained(
            tmp_path, pretraining_tasks=["mlm", "titp", "tits"], output_loading_info=True
        )
    assert "LOAD REPORT" not in capfd.readouterr().err  # transformers' key-by-key table
    assert [record.getMessage() for record in caplog.records] == [
        "LxmertSModel: the checkpoint's heads heads.itm, heads.mlm, heads.mrfr are not used",
        "LxmertSForPreTraining: heads heads.titp, heads.tits start fresh; "
        "the checkpoint's heads heads.itm, heads.mrfr are not used",
    ]
    # the loading info still lists every key, as transformers' does
    saved = set(load_file(tmp_path / "model.safetensors"))
    assert not encoder_loading["missing_keys"]
    assert encoder_loading["unexpected_keys"] == {key for key in saved if key.startswith("heads.")}
    assert stage_loading["missing_keys"] == {
        key for key in stage.state_dict() if key.startswith(("heads.titp.", "heads.tits."))
    }
    assert stage_loading["unexpected_keys"] == {
        key for key in saved if key.startswith(("heads.itm.", "heads.mrfr."))
    }
    assert not encoder.fresh_parameters
    assert stage.fresh_parameters == {
        name for name, _ in stage.named_parameters() if name.startswith(("heads.titp.", "heads.tits."))
    }


def test_a_head_only_partly_in_the_checkpoint_is_still_reported(tmp_path):
    LxmertSForPreTraining(SETTINGS["default"](pretraining_tasks=["flm"])).save_pretrained(tmp_path)
    model, loading = LxmertSForPreTraining.from_pretrained(
        tmp_path, flm_reconstructor_layers=2, output_loading_info=True
    )
    assert loading["missing_keys"] and all(
        key.startswith("heads.flm.reconstructor.layers.1.") for key in loading["missing_keys"]
    )
    assert not model.fresh_parameters


@pytest.mark.parametrize(("model_class", "setting"), CASES, ids=CASE_IDS)
def test_a_checkpoint_without_weights_reports_every_parameter_missing(model_class, setting, tmp_path):
    """transformers' `test_model_weights_reload_no_missing_tied_weights`: loaded from a file holding none of
    its weights, a model reports each of its parameters and persistent buffers missing (a weight tied to
    another may go unreported, its source being reported)."""
    model, _ = build(model_class, setting)
    model.save_pretrained(tmp_path)
    save_file({"tensor": torch.tensor([1, 2])}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    reloaded, loading = model_class.from_pretrained(tmp_path, output_loading_info=True)
    state = set(reloaded.state_dict())
    tied = set(reloaded._tied_weights_keys or {})
    assert state - tied <= loading["missing_keys"] <= state
    assert loading["unexpected_keys"] == {"tensor"}


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("model_class", MODEL_CLASSES[1:], ids=lambda cls: cls.__name__)
def test_a_task_model_loaded_from_the_encoder_reports_its_head_missing(model_class, setting, tmp_path):
    """transformers' `test_correct_missing_keys`: the encoder's checkpoint has no head, and the loading info
    of a task model built from it says so, head by head, while the log says it in one line."""
    model, inputs = build(model_class, setting)
    model.base_model.save_pretrained(tmp_path)
    loaded, loading = model_class.from_pretrained(tmp_path, output_loading_info=True)
    heads = {key for key in loaded.state_dict() if not key.startswith("lxmert.")}
    tied = set(loaded._tied_weights_keys or {})
    assert heads and loading["missing_keys"] == heads - tied
    assert loaded.fresh_parameters == {name for name, _ in loaded.named_parameters() if name in heads}
    with torch.no_grad():  # the encoder came from the checkpoint
        assert torch.equal(loaded.eval().lxmert(**inputs).pooled_output, model.lxmert(**inputs).pooled_output)


# ---- the contrastive features (transformers' get_text_features / get_image_features tests) ---------------

FEATURE_CASES = [
    (model_class, setting)
    for model_class in (LxmertSForPreTraining, LxmertSForImageTextRetrieval)
    for setting in SETTINGS
]
FEATURE_IDS = [f"{model_class.__name__}-{setting}" for model_class, setting in FEATURE_CASES]
TEXT = ("input_ids", "attention_mask", "position_ids")
IMAGE = ("visual_feats", "visual_pos", "visual_attention_mask")


def build_with_vsc(model_class, setting: str):
    tasks = SETTINGS[setting]().pretraining_tasks
    model, inputs = build(model_class, setting, pretraining_tasks=list(dict.fromkeys([*tasks, "vsc"])))
    text = {name: inputs[name] for name in TEXT}
    image = {name: inputs[name] for name in IMAGE}
    return model, text, image


@pytest.mark.parametrize("return_dict", [True, False, None])
@pytest.mark.parametrize(("model_class", "setting"), FEATURE_CASES, ids=FEATURE_IDS)
def test_features_are_an_output_with_pooling_or_its_tuple(model_class, setting, return_dict):
    """transformers' `test_get_{text,image}_features_output`: inputs by keyword; a
    `BaseModelOutputWithPooling` whose `pooler_output` is the embedding compared, unless the config says
    `return_dict=False`."""
    model, text, image = build_with_vsc(model_class, setting)
    config = model.config
    batch, length = text["input_ids"].shape
    regions = image["visual_feats"].shape[1] + config.visual_cls_token
    if return_dict is not None:
        config.return_dict = return_dict
    with torch.no_grad():
        outputs = model.get_text_features(**text), model.get_image_features(**image)
        asked = (
            model.get_text_features(**text, return_dict=True),
            model.get_image_features(**image, return_dict=True),
        )
    for output, reference, states in zip(outputs, asked, ((length,), (regions,)), strict=True):
        assert isinstance(reference, BaseModelOutputWithPooling)
        assert reference.last_hidden_state.shape == (batch, *states, config.hidden_size)
        assert reference.pooler_output.shape == (batch, config.hidden_size)  # contrastive_dim unset
        assert torch.allclose(reference.pooler_output.norm(dim=-1), torch.ones(batch))
        if return_dict is False:
            assert isinstance(output, tuple) and len(output) == 2
            assert_same(output, reference.to_tuple())
        else:
            assert isinstance(output, BaseModelOutputWithPooling)
            assert_same(output.to_tuple(), reference.to_tuple())
    text_states, image_states = (output.last_hidden_state for output in asked)
    with torch.no_grad():  # the states the encoder's first layer reads
        encoded = model.lxmert(**text, **image, output_hidden_states=True, return_dict=True)
    assert torch.equal(text_states, encoded.language_hidden_states[0])
    assert torch.equal(image_states, encoded.vision_hidden_states[0])


@pytest.mark.parametrize("asked_by", ["argument", "config"])
@pytest.mark.parametrize(("model_class", "setting"), FEATURE_CASES, ids=FEATURE_IDS)
def test_features_give_their_hidden_states_and_attentions_when_asked(model_class, setting, asked_by):
    """transformers' `test_get_{text,image}_features_{hidden_states,attentions}`, with the count of layers the
    features pass: none (the module docstring says why), so one hidden state and no attention."""
    model, text, image = build_with_vsc(model_class, setting)
    with torch.no_grad():
        plain = model.get_text_features(**text), model.get_image_features(**image)
        flags = {"output_hidden_states": True, "output_attentions": True}
        if asked_by == "config":
            model.set_attn_implementation("eager")
            model.config.output_hidden_states = model.config.output_attentions = True
            flags = {}
        asked = model.get_text_features(**text, **flags), model.get_image_features(**image, **flags)
    for without, output in zip(plain, asked, strict=True):
        assert without.hidden_states is None and without.attentions is None
        assert len(output.hidden_states) == 1 and torch.equal(
            output.hidden_states[0], output.last_hidden_state
        )
        assert output.attentions == ()
        assert torch.equal(output.pooler_output, without.pooler_output)


def test_features_check_their_inputs_as_the_forward_pass_does():
    model, text, image = build_with_vsc(LxmertSForPreTraining, "default")
    with pytest.raises(ValueError, match="^position_ids: this model uses word-level positions"):
        model.get_text_features(input_ids=text["input_ids"], attention_mask=text["attention_mask"])
    with pytest.raises(ValueError, match=r"^visual_pos: expected shape \(3, 5, 4\)"):
        model.get_image_features(visual_feats=image["visual_feats"], visual_pos=image["visual_pos"][:, :4])
    with pytest.raises(RuntimeError, match="^visual_feats: holds NaN or inf"):
        model.get_image_features(visual_feats=image["visual_feats"] / 0, visual_pos=image["visual_pos"])


# ---- embeddings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model_class", "setting"), CASES, ids=CASE_IDS)
def test_input_and_output_embeddings(model_class, setting):
    model, _ = build(model_class, setting)
    embeddings = model.get_input_embeddings()
    assert isinstance(embeddings, torch.nn.Embedding) and embeddings.num_embeddings == model.config.vocab_size
    replacement = torch.nn.Embedding(model.config.vocab_size, model.config.hidden_size)
    model.set_input_embeddings(replacement)
    assert model.get_input_embeddings() is replacement
    output = model.get_output_embeddings()
    if model_class is not LxmertSForPreTraining:
        assert output is None
        return
    # the first head of the config with a tied word decoder
    first = next(task for task in model.config.pretraining_tasks if task in ("mlm", "flm"))
    assert output is model.heads[first].decoder
    decoder = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=False)
    model.set_output_embeddings(decoder)
    assert model.heads[first].decoder is decoder


def vocabulary_sized(model, vocab_size: int) -> set[str]:
    """The parameters, tied ones under each name, with a vocabulary-sized first axis (the tiny sizes give no
    other axis the vocabulary's size)."""
    return {
        name
        for name, parameter in model.named_parameters(remove_duplicate=False)
        if parameter.shape[:1] == (vocab_size,)
    }


@pytest.mark.parametrize("change", [+3, -2], ids=["grow", "shrink"])
@pytest.mark.parametrize("task", PRETRAINING_TASKS)
def test_resizing_the_vocabulary_resizes_every_head(task, change):
    model, inputs = build(LxmertSForPreTraining, "default", **task_settings(task))
    old, size = model.config.vocab_size, model.config.vocab_size + change
    sized = vocabulary_sized(model, old)
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    model.resize_token_embeddings(size)
    assert model.config.vocab_size == size
    assert vocabulary_sized(model, size) == sized and not vocabulary_sized(model, old)
    for name, parameter in model.named_parameters():
        if name in sized:  # the rows both vocabularies have are kept
            kept = min(old, size)
            assert torch.equal(parameter.detach()[:kept], before[name][:kept]), name
    for decoder_task in ("mlm", "flm"):
        if decoder_task in model.heads:
            assert model.heads[decoder_task].decoder.weight is model.get_input_embeddings().weight
    top = size - 1  # the last word of the new vocabulary (grown: one only it has)
    inputs["input_ids"] = inputs["input_ids"].clamp(max=top)
    inputs["input_ids"][0, 1] = top
    labels = {**random_labels(model.config, inputs), **alignment_labels(inputs)}
    labels["mlm_labels"][0, 1] = top
    names = {
        name for head in model.config.pretraining_tasks for name in PRETRAINING_TASKS[head].head.label_names
    }
    model.train()
    output = model(**inputs, **{name: labels[name] for name in names})
    assert torch.isfinite(output.loss)
    output.loss.backward()
    with torch.no_grad():
        predictions = model.eval()(**inputs)
    if "mlm" in model.heads:
        assert predictions.prediction_logits.shape[-1] == size


@pytest.mark.parametrize(("model_class", "setting"), CASES, ids=CASE_IDS)
def test_every_model_resizes_its_vocabulary(model_class, setting):
    model, inputs = build(model_class, setting)
    model.resize_token_embeddings(model.config.vocab_size + 4)
    inputs["input_ids"][0, 1] = model.config.vocab_size - 1
    with torch.no_grad():
        output = model(**inputs)
    assert all(torch.isfinite(value).all() for value in output.values() if isinstance(value, torch.Tensor))
