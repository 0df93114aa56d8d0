"""LXMERT-S: size, parity with transformers' LXMERT, attention paths, heads and their losses, input checks."""

from __future__ import annotations

import math

import pytest
import torch
from model_inputs import (
    EVERY_HEAD,
    alignment_labels,
    random_inputs,
    random_labels,
    task_settings,
    tiny_config,
)
from torch.nn import functional as F
from transformers import LxmertConfig, LxmertForPreTraining, LxmertModel
from transformers.utils import logging as transformers_logging

from modeling_lxmert_s import (
    PRETRAINING_TASKS,
    LxmertSConfig,
    LxmertSForPreTraining,
    LxmertSModel,
    convert_lxmert_state_dict,
)


def test_default_size_is_the_papers_84_3m():
    model = LxmertSModel(LxmertSConfig())
    counted = sum(
        parameter.numel()
        for name, parameter in model.named_parameters()
        if not name.startswith(("embeddings.", "pooler.", "visual_pooler."))
        and "visual_cls_feature" not in name
    )
    assert counted == 84_278_784
    assert len(model.encoder.x_layers) == 5


def _tiny_lxmert_config(**overrides) -> LxmertConfig:
    sizes = {
        "hidden_size": 16,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "vocab_size": 40,
        "max_position_embeddings": 24,
        "visual_feat_dim": 12,
        "num_object_labels": 7,
        "num_attr_labels": 5,
        "num_qa_labels": 3,
    }
    return LxmertConfig(l_layers=0, r_layers=0, x_layers=5, **{**sizes, **overrides})


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_lxmert_compatible_setting_matches_transformers_lxmert(attention):
    lxmert_config = _tiny_lxmert_config()
    reference = LxmertModel(lxmert_config).eval()
    config = LxmertSConfig.from_lxmert_config(lxmert_config, pretraining_tasks=[])
    model = LxmertSModel(config).eval()
    converted = convert_lxmert_state_dict(reference.state_dict())
    missing, unexpected = model.load_state_dict({k.removeprefix("lxmert."): v for k, v in converted.items()})
    assert not missing and not unexpected
    model.set_attn_implementation(attention)
    inputs = random_inputs(config)
    inputs.pop("position_ids")  # LXMERT's positions: 0..L-1, the default of the absolute setting
    with torch.no_grad():
        expected = reference(**inputs)
        ours = model(**inputs)
    for name in ("language_output", "vision_output", "pooled_output"):
        assert (expected[name] - ours[name]).abs().max().item() <= 1e-5, name


def test_converted_pretraining_heads_give_lxmert_pretraining_loss():
    lxmert_config = _tiny_lxmert_config(task_qa=False)
    reference = LxmertForPreTraining(lxmert_config).eval()
    config = LxmertSConfig.from_lxmert_config(lxmert_config, pretraining_tasks=["mlm", "mrfr", "moc", "itm"])
    model = LxmertSForPreTraining(config).eval()
    missing, unexpected = model.load_state_dict(convert_lxmert_state_dict(reference.state_dict()))
    assert not missing and not unexpected
    inputs = random_inputs(config)
    inputs.pop("position_ids")
    labels = random_labels(config, inputs)
    with torch.no_grad():
        expected = reference(
            **inputs,
            labels=labels["mlm_labels"],
            matched_label=labels["itm_labels"],
            obj_labels={
                "obj": (labels["moc_object_labels"], labels["moc_object_confidences"]),
                "attr": (labels["moc_attribute_labels"], labels["moc_attribute_confidences"]),
                "feat": (labels["mrfr_labels"], labels["region_mask"].float()),
            },
        )
        ours = model(**inputs, **{name: labels[name] for name in _label_names(["mlm", "mrfr", "moc", "itm"])})
    assert torch.allclose(ours.loss, expected.loss, atol=1e-5)
    assert torch.allclose(ours.itm_logits, expected.cross_relationship_score, atol=1e-5)


def _label_names(tasks: list[str]) -> set[str]:
    return {name for task in tasks for name in PRETRAINING_TASKS[task].head.label_names}


def test_sdpa_and_eager_agree_in_the_reference_setting():
    config = tiny_config()
    model = LxmertSForPreTraining(config).eval()
    inputs = random_inputs(config)
    labels = random_labels(config, inputs)
    outputs = {}
    for attention in ("sdpa", "eager"):
        model.set_attn_implementation(attention)
        with torch.no_grad():
            outputs[attention] = model(**inputs, **labels)
    for name in ("language_output", "vision_output", "pooled_output"):
        assert torch.allclose(outputs["sdpa"][name], outputs["eager"][name], atol=1e-5)
    for task in EVERY_HEAD:
        assert torch.allclose(outputs["sdpa"].losses[task], outputs["eager"].losses[task], atol=1e-5)


def test_padding_does_not_leak_into_outputs():
    config = tiny_config()
    model = LxmertSModel(config).eval()
    inputs = random_inputs(config)
    changed = {name: tensor.clone() for name, tensor in inputs.items()}
    changed["input_ids"][0, -3:] = 17  # padded text positions of row 0
    changed["visual_feats"][1, -2:] += 5.0  # padded regions of row 1
    with torch.no_grad():
        before, after = model(**inputs), model(**changed)
    assert torch.allclose(before.language_output[0, :-3], after.language_output[0, :-3], atol=1e-6)
    assert torch.allclose(before.vision_output[1, :-2], after.vision_output[1, :-2], atol=1e-6)
    assert torch.allclose(before.pooled_output, after.pooled_output, atol=1e-6)


def test_reference_setting_prepends_the_visual_cls_and_multiplies_two_poolers():
    config = tiny_config()
    model = LxmertSModel(config).eval()
    inputs = random_inputs(config)
    with torch.no_grad():
        output = model(**inputs)
    assert output.vision_output.shape[1] == inputs["visual_feats"].shape[1] + 1
    language_pooled = torch.tanh(model.pooler.dense(output.language_output[:, 0]))
    visual_pooled = torch.tanh(model.visual_pooler.dense(output.vision_output[:, 0]))
    assert torch.allclose(output.pooled_output, language_pooled * visual_pooled, atol=1e-6)


def test_bf16_autocast_trains_and_stays_close_to_fp32():
    config = tiny_config()
    model = LxmertSForPreTraining(config).eval()
    inputs = random_inputs(config)
    labels = random_labels(config, inputs)
    with torch.no_grad():
        full = model(**inputs, **labels)
    model.train()
    seen = []
    query = model.lxmert.encoder.x_layers[0].visual_attention.att.query
    hook = query.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(**inputs, **labels)
    hook.remove()
    # the shared cross-attention, once per direction, in the ordinary pass and in FLM's passes
    assert seen == [torch.bfloat16] * 4
    assert torch.isfinite(mixed.loss)
    mixed.loss.backward()
    gradient = model.lxmert.encoder.x_layers[0].visual_attention.att.query.weight.grad
    assert gradient is not None and torch.isfinite(gradient).all() and gradient.abs().sum() > 0
    # dropout is on in train mode, so compare the eval-mode pooled output under autocast
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mixed_eval = model(**inputs)
    assert torch.allclose(mixed_eval.pooled_output.float(), full.pooled_output, atol=5e-2)


def test_gradient_checkpointing_gives_the_same_gradients():
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = LxmertSForPreTraining(config).train()
    inputs = random_inputs(config)
    labels = random_labels(config, inputs)

    def gradients():
        model.zero_grad()
        model(**inputs, **labels).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.lxmert.encoder.x_layers)
    checkpointed = gradients()
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6), name


# ---- losses against hand computations ------------------------------------------------------


def _features(model: LxmertSForPreTraining, inputs: dict[str, torch.Tensor]):
    output = model.lxmert(**inputs)
    return output.language_output, output.vision_output[:, 1:], output.pooled_output


def _region_states(head, regions: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    return head.transform(regions) * pooled[:, None, :]


def _smooth_l1(difference: float) -> float:
    return 0.5 * difference**2 if abs(difference) < 1 else abs(difference) - 0.5


@pytest.fixture
def hand_setup():
    config = tiny_config(loss_weights={"ifrs": 0.5})
    model = LxmertSForPreTraining(config).eval()
    inputs = random_inputs(config)
    labels = random_labels(config, inputs)
    with torch.no_grad():
        output = model(**inputs, **labels)
        features = _features(model, inputs)
    return config, model, labels, output, features


def test_mlm_loss_by_hand(hand_setup):
    _, model, labels, output, (language, _, _) = hand_setup
    head = model.heads["mlm"]
    terms = []
    with torch.no_grad():
        for b, position in zip(*torch.nonzero(labels["mlm_labels"] != -100, as_tuple=True), strict=True):
            logits = head.decoder(head.transform(language[b, position])) + head.bias
            terms.append(torch.logsumexp(logits, 0) - logits[labels["mlm_labels"][b, position]])
    assert len(terms) == 3
    assert torch.allclose(output.losses["mlm"], torch.stack(terms).mean(), atol=1e-5)


@pytest.mark.parametrize(
    ("task", "chosen"), [("mlm", "mlm_labels"), ("mrfr", "region_mask"), ("ifrs", "ifrs_mask")]
)
def test_decoders_run_only_at_chosen_positions(hand_setup, task, chosen):
    config, model, labels, _, _ = hand_setup
    seen = []
    hook = model.heads[task].decoder.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    inputs = random_inputs(config)
    with torch.no_grad():
        model(**inputs, **{name: labels[name] for name in PRETRAINING_TASKS[task].head.label_names})
    hook.remove()
    count = int((labels[chosen] != -100).sum()) if task == "mlm" else int(labels[chosen].sum())
    assert count == 3 and len(seen) == 1 and seen[0][0] == count


def test_mrfr_loss_by_hand(hand_setup):
    config, model, labels, output, (_, regions, pooled) = hand_setup
    with torch.no_grad():
        predicted = model.heads["mrfr"].decoder(_region_states(model.heads["mrfr"], regions, pooled))
    batch, count = labels["region_mask"].shape
    total = 0.0
    for b in range(batch):
        for r in range(count):
            if labels["region_mask"][b, r]:
                differences = (predicted[b, r] - labels["mrfr_labels"][b, r]).tolist()
                total += sum(_smooth_l1(d) for d in differences) / config.visual_feat_dim
    expected = total / (batch * count) * config.visual_loss_normalizer
    assert math.isclose(output.losses["mrfr"].item(), expected, rel_tol=1e-5)


@pytest.mark.parametrize("masked_only", [False, True])
def test_moc_loss_by_hand(masked_only):
    config = tiny_config(moc_masked_regions_only=masked_only)
    model = LxmertSForPreTraining(config).eval()
    inputs = random_inputs(config)
    labels = random_labels(config, inputs)
    with torch.no_grad():
        output = model(**inputs, **labels)
        _, regions, pooled = _features(model, inputs)
        states = _region_states(model.heads["moc"], regions, pooled)
        object_logits = model.heads["moc"].object_decoder(states)
        attribute_logits = model.heads["moc"].attribute_decoder(states)
    batch, count = labels["region_mask"].shape
    total = 0.0
    for b in range(batch):
        for r in range(count):
            keep = 1.0 if not masked_only else float(labels["region_mask"][b, r])
            for logits, targets, weights in (
                (object_logits, "moc_object_labels", "moc_object_confidences"),
                (attribute_logits, "moc_attribute_labels", "moc_attribute_confidences"),
            ):
                nll = -F.log_softmax(logits[b, r], -1)[labels[targets][b, r]].item()
                total += nll * labels[weights][b, r].item() * keep
    expected = total / (batch * count) * config.visual_loss_normalizer
    assert math.isclose(output.losses["moc"].item(), expected, rel_tol=1e-5)


def test_itm_loss_by_hand(hand_setup):
    _, model, labels, output, (_, _, pooled) = hand_setup
    with torch.no_grad():
        logits = model.heads["itm"].classifier(pooled)
    terms = [-F.log_softmax(logits[b], -1)[labels["itm_labels"][b]] for b in range(len(logits))]
    assert torch.allclose(output.losses["itm"], torch.stack(terms).mean(), atol=1e-6)
    assert torch.allclose(output.itm_logits, logits, atol=1e-6)


def test_ifrs_loss_by_hand(hand_setup):
    _, model, labels, output, (_, regions, pooled) = hand_setup
    with torch.no_grad():
        predicted = model.heads["ifrs"].decoder(_region_states(model.heads["ifrs"], regions, pooled))
    positions = torch.nonzero(labels["ifrs_mask"]).tolist()
    squared = [((predicted[b, r] - labels["ifrs_labels"][b, r]) ** 2).sum().item() for b, r in positions]
    assert len(squared) == 3
    assert math.isclose(output.losses["ifrs"].item(), sum(squared) / 3, rel_tol=1e-5)


@pytest.mark.parametrize("task", ["titp", "tits"])
def test_topic_loss_by_hand(hand_setup, task):
    config, model, labels, output, (_, _, pooled) = hand_setup
    head = model.heads[task]
    with torch.no_grad():
        logits = head.LayerNorm(F.gelu(head.dense(pooled)))
    target = labels[f"{task}_labels"]
    total = 0.0
    for b in range(len(logits)):
        for v in range(config.vocab_size):
            p = torch.sigmoid(logits[b, v]).item()
            total -= target[b, v].item() * math.log(p) + (1 - target[b, v].item()) * math.log(1 - p)
    assert math.isclose(output.losses[task].item(), total / (len(logits) * config.vocab_size), rel_tol=1e-5)


def test_total_loss_is_the_weighted_sum(hand_setup):
    _, _, _, output, _ = hand_setup
    expected = sum(value * (0.5 if task == "ifrs" else 1.0) for task, value in output.losses.items())
    assert set(output.losses) == set(EVERY_HEAD)
    assert torch.allclose(output.loss, expected)


def test_absent_labels_contribute_nothing():
    config = tiny_config()
    model = LxmertSForPreTraining(config).eval()
    inputs = random_inputs(config)
    labels = random_labels(config, inputs)
    with torch.no_grad():
        only_itm = model(**inputs, itm_labels=labels["itm_labels"])
        no_labels = model(**inputs)
    assert list(only_itm.losses) == ["itm"]
    assert torch.equal(only_itm.loss, only_itm.losses["itm"])
    assert "loss" not in no_labels and "losses" not in no_labels
    assert only_itm.prediction_logits is None  # with labels, the full scores are not computed


def test_a_batch_without_chosen_positions_gives_a_zero_loss_in_the_graph():
    config = tiny_config()
    model = LxmertSForPreTraining(config).train()
    inputs = random_inputs(config)
    batch, length = inputs["input_ids"].shape
    output = model(**inputs, mlm_labels=torch.full((batch, length), -100))
    assert output.loss.item() == 0.0
    output.loss.backward()  # must not fail: the zero is connected to the MLM head


@pytest.mark.parametrize("task", PRETRAINING_TASKS)
def test_each_heads_gradient_reaches_the_encoder(task):
    config = tiny_config(**task_settings(task))
    model = LxmertSForPreTraining(config).train()
    inputs = random_inputs(config)
    labels = {**random_labels(config, inputs), **alignment_labels(inputs)}
    names = {name for head in config.pretraining_tasks for name in PRETRAINING_TASKS[head].head.label_names}
    model(**inputs, **{name: labels[name] for name in names}).loss.backward()
    reached = [model.lxmert.encoder.visn_fc.visn_fc.weight, model.lxmert.embeddings.word_embeddings.weight]
    if task != "vsc":  # VSC compares the embeddings themselves, before any cross-modality layer
        reached.append(model.lxmert.encoder.x_layers[0].visual_attention.att.query.weight)
    for parameter in reached:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


def test_itm_hs_trains_the_itm_module_under_its_own_name(tmp_path):
    config = tiny_config(pretraining_tasks=["mlm", "itm_hs"])
    model = LxmertSForPreTraining(config).eval()
    inputs = random_inputs(config)
    labels = random_labels(config, inputs)
    assert set(model.heads) == {"mlm", "itm"}
    with torch.no_grad():
        output = model(**inputs, itm_labels=labels["itm_labels"])
    assert list(output.losses) == ["itm_hs"]
    expected = F.cross_entropy(output.itm_logits, labels["itm_labels"])
    assert torch.allclose(output.losses["itm_hs"], expected)
    # the same weights: an ITM_HS checkpoint loads into an ITM model and back, head included
    model.save_pretrained(tmp_path)
    plain = LxmertSForPreTraining.from_pretrained(tmp_path, pretraining_tasks=["itm"])
    assert torch.equal(plain.heads["itm"].classifier.weight, model.heads["itm"].classifier.weight)


def test_a_stage_model_carries_only_its_heads_and_the_mlm_decoder_is_tied():
    model = LxmertSForPreTraining(tiny_config(pretraining_tasks=["mlm", "tits"]))
    assert set(model.heads) == {"mlm", "tits"}
    assert model.heads["mlm"].decoder.weight is model.lxmert.embeddings.word_embeddings.weight
    no_mlm = LxmertSForPreTraining(tiny_config(pretraining_tasks=["itm"]))
    assert no_mlm.get_output_embeddings() is None


# ---- bad input --------------------------------------------------------------------------------


@pytest.fixture
def small_model():
    config = tiny_config(pretraining_tasks=["mlm", "itm"])
    return config, LxmertSForPreTraining(config).eval()


def test_labels_for_a_task_the_model_lacks_are_refused(small_model):
    config, model = small_model
    inputs = random_inputs(config)
    labels = random_labels(config, inputs)
    with pytest.raises(ValueError, match=r"tits_labels.*\['tits'\].*does not carry"):
        model(**inputs, tits_labels=labels["tits_labels"])
    with pytest.raises(ValueError, match="unexpected argument 'mlm_label'"):
        model(**inputs, mlm_label=labels["mlm_labels"])


def test_a_task_with_partial_labels_is_refused():
    config = tiny_config(pretraining_tasks=["ifrs"])
    model = LxmertSForPreTraining(config)
    inputs = random_inputs(config)
    labels = random_labels(config, inputs)
    with pytest.raises(ValueError, match=r"'ifrs'.*\['ifrs_mask'\]"):
        model(**inputs, ifrs_labels=labels["ifrs_labels"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"pooler_type": "product", "visual_cls_token": False}, "visual_cls_token"),
        ({"alignment_temperature": 0.0}, "alignment_temperature"),
        ({"hidden_size": 15}, "multiple of"),
    ],
)
def test_config_refuses_impossible_settings(settings, message):
    with pytest.raises(Exception, match=message):
        tiny_config(**settings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"pretraining_tasks": ["mlm", "nsp"]}, r"^pretraining_tasks: unknown \['nsp'\]"),
        ({"pretraining_tasks": ["mlm", "mlm"]}, "lists a task twice"),
        ({"pretraining_tasks": ["itm", "itm_hs"]}, r"\['itm', 'itm_hs'\] train the same head \(heads.itm\)"),
        ({"pretraining_tasks": ["itm_vsc", "itm", "vsc"]}, r"\['itm_vsc', 'itm'\] train the same head"),
        (
            {"pretraining_tasks": ["wpg", "itm_hs"]},
            r"\['wpg'\] build their negatives in the batch .*\['itm_hs'\]",
        ),
        (
            {"pretraining_tasks": ["itm_vsc"]},
            "'itm_vsc' mines its negatives from the VSC similarities: add 'vsc'",
        ),
        ({"loss_weights": {"mlmm": 2.0}}, r"loss_weights: unknown tasks \['mlmm'\]"),
    ],
)
def test_the_pretraining_model_refuses_task_lists_no_stage_can_train(settings, message):
    with pytest.raises(ValueError, match=message):
        LxmertSForPreTraining(tiny_config(**settings))


def test_hidden_states_and_attentions_are_returned_per_layer(caplog):
    config = tiny_config()
    model = LxmertSModel(config).eval()
    inputs = random_inputs(config)
    batch, length = inputs["input_ids"].shape
    regions = inputs["visual_feats"].shape[1] + 1  # with the visual [CLS]
    transformers_logging.warning_once.cache_clear()  # the warning comes once per process
    with torch.no_grad():
        states = model(**inputs, output_hidden_states=True)
        under_sdpa = model(**inputs, output_attentions=True)  # this call runs eager attention, and says so
        model.set_attn_implementation("eager")
        attentions = model(**inputs, output_attentions=True)
    assert "sdpa attention returns no weights" in caplog.text
    for name in ("language_attentions", "vision_attentions", "cross_encoder_attentions"):
        for ours, eager in zip(under_sdpa[name], attentions[name], strict=True):
            assert torch.allclose(ours, eager, atol=1e-6), name
    assert len(states.language_hidden_states) == len(states.vision_hidden_states) == config.num_layers + 1
    assert torch.equal(states.language_hidden_states[-1], states.language_output)
    heads = config.num_attention_heads
    assert attentions.language_attentions[0].shape == (batch, heads, length, length)
    assert attentions.vision_attentions[0].shape == (batch, heads, regions, regions)
    assert attentions.cross_encoder_attentions[0].shape == (batch, heads, length, regions)
    # padded regions of row 1 get no attention from the text
    assert attentions.cross_encoder_attentions[-1][1, :, :, -2:].abs().max() == 0
