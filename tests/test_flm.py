"""FLM (free language modeling) beside MLM: the unidirectional passes, the reconstructor, the loss, the
collator piece, and the ordinary pass left as it was."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from model_inputs import random_inputs, tiny_config
from tiny_curriculum import tiny_stages, write_tiny_curriculum
from torch.nn import functional as F

from lxmert_s_msp.data.collators import MSPCollator
from lxmert_s_msp.data.store import write_store
from lxmert_s_msp.data.tokenizer import wordpiece_tokenizer_from_vocabulary
from lxmert_s_msp.training.curriculum import load_curriculum
from lxmert_s_msp.training.pretraining import run_curriculum
from modeling_lxmert_s import LxmertSConfig, LxmertSForPreTraining
from modeling_lxmert_s.modeling_lxmert_s import (
    LxmertSCrossModalityLayer,
    reconstructor_key_mask,
    unidirectional_attention_mask,
)
from modeling_lxmert_s.pretraining_pieces import flm_targets, mask_tokens
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor

# random_inputs: texts of 5, 8 and 7 tokens in a length of 8.
LENGTHS = (5, 8, 7)
# Weights large enough that a leak through the regions shows in the logits (at 0.02 it moves them by ~1e-8).
LEAK_TEST_INIT = {"initializer_range": 0.2}


def flm_labels(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Every real token after position 0 is a word, as `flm_targets` labels a text without [SEP]."""
    length = inputs["input_ids"].shape[1]
    words = inputs["attention_mask"].bool() & (torch.arange(length) > 0)
    return torch.where(words, inputs["input_ids"], -100)


def flm_model(**settings) -> tuple[LxmertSConfig, LxmertSForPreTraining]:
    config = tiny_config(pretraining_tasks=["flm"], **settings)
    return config, LxmertSForPreTraining(config).eval()


def flm_logits(model: LxmertSForPreTraining, inputs: dict[str, torch.Tensor], labels: torch.Tensor):
    """(B, L, V) logits of the reconstructed words (NaN where none), read from the FLM decoder's one call."""
    seen = []
    hook = model.heads["flm"].decoder.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        model(**inputs, flm_labels=labels)
        hook.remove()
        _, reconstructable = reconstructor_key_mask(inputs["attention_mask"])
        logits = torch.full((*labels.shape, model.config.vocab_size), math.nan)
        logits[(labels != -100) & reconstructable] = seen[0] + model.heads["flm"].bias
    return logits


def with_word(inputs, labels, position: int, token: int):
    """The inputs and labels with the word at `position` replaced by `token` in every row that has one."""
    changed = {name: tensor.clone() for name, tensor in inputs.items()}
    word = labels[:, position] != -100
    changed["input_ids"][word, position] = token
    changed_labels = labels.clone()
    changed_labels[word, position] = token
    return changed, changed_labels


def leaky_regions(monkeypatch) -> None:
    """Let the regions read the words in FLM's passes too, which the passes must not do: every region
    reads the keys of the left-to-right [CLS] row, all words of that pass (the ordinary pass is unchanged)."""

    def regions_read_words(
        self,
        lang_feats,
        lang_mask,
        visual_feats,
        visual_mask,
        vision_sees_language=True,
        output_attentions=None,
        visual_self_mask=None,
        visual_boxes=None,
    ):
        lang_cross, _ = self.visual_attention(lang_feats, visual_feats, visual_mask)
        visual_cross, _ = self.visual_attention(visual_feats, lang_feats, lang_mask[:, :, :1])
        lang_self, _ = self.lang_self_att(lang_cross, lang_mask)
        visual_self, _ = self.visn_self_att(visual_cross, visual_mask)
        lang_out = self.lang_output(self.lang_inter(lang_self), lang_self)
        return lang_out, self.visn_output(self.visn_inter(visual_self), visual_self), None, None, None

    monkeypatch.setattr(LxmertSCrossModalityLayer, "forward", regions_read_words)


# ---- masks -------------------------------------------------------------------------------------


def test_unidirectional_mask_sides_cls_row_and_padding():
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
    mask = unidirectional_attention_mask(attention_mask)[0]
    length = 7
    assert mask.shape == (2 * length, 2 * length)
    left_to_right, right_to_left = mask[:length, :length], mask[length:, length:]
    assert not mask[:length, length:].any() and not mask[length:, :length].any()
    for i in range(1, 5):
        assert left_to_right[i].nonzero().flatten().tolist() == list(range(1, i + 1))
        assert right_to_left[i].nonzero().flatten().tolist() == list(range(i, 5))
    # [CLS] sees every word; no word sees [CLS]
    for side in (left_to_right, right_to_left):
        assert side[0].tolist() == [True] * 5 + [False] * 2
        assert not side[1:5, 0].any()
        # padding is never a key, and padding rows are never empty
        assert not side[:, 5:].any() and side[5:].any(-1).all()


def test_reconstructor_mask_reads_the_left_pass_before_and_the_right_pass_after():
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]])
    key_mask, reconstructable = reconstructor_key_mask(attention_mask)
    assert key_mask.shape == (2, 6, 12)
    assert reconstructable.tolist() == [[False, True, True, True, True, False], [False] * 6]
    for i in range(1, 5):
        assert key_mask[0, i, :6].nonzero().flatten().tolist() == list(range(1, i))
        assert key_mask[0, i, 6:].nonzero().flatten().tolist() == list(range(i + 1, 5))
        assert not key_mask[0, i, [0, 6]].any()  # the [CLS] states saw every word
    # rows not reconstructed read every real token, so no softmax row is empty
    assert key_mask[0, 0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert key_mask[1, 1].nonzero().flatten().tolist() == [0, 1, 6, 7]  # one token after [CLS]: no context


def test_corruption_hides_a_span_of_about_rate_times_length_around_each_word():
    rate, length, batch = 0.2, 41, 50
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    clean, _ = reconstructor_key_mask(attention_mask)
    corrupted, reconstructable = reconstructor_key_mask(
        attention_mask, rate, generator=torch.Generator().manual_seed(0)
    )
    assert reconstructable[:, 1:].all()
    assert not (corrupted & ~clean).any()
    assert corrupted[:, 1:].any(-1).all()  # a key always stays
    fractions = []
    for i in range(10, 31):  # rows whose span cannot reach an end
        hidden_left = clean[:, i, :length] & ~corrupted[:, i, :length]
        hidden_right = clean[:, i, length:] & ~corrupted[:, i, length:]
        left, right = hidden_left.sum(-1), hidden_right.sum(-1)
        for b in range(batch):
            assert hidden_left[b].nonzero().flatten().tolist() == list(range(i - int(left[b]), i))
            assert hidden_right[b].nonzero().flatten().tolist() == list(range(i + 1, i + 1 + int(right[b])))
        assert ((left - right).abs() <= 1).all()
        fractions.append((left + right + 1).float() / length)
    assert abs(torch.cat(fractions).mean().item() - rate) < 0.01


def test_a_word_with_no_key_is_no_target():
    config, model = flm_model()
    inputs = random_inputs(config)
    inputs["attention_mask"][0] = torch.tensor([1, 1, 0, 0, 0, 0, 0, 0])
    inputs["input_ids"][0] *= inputs["attention_mask"][0]
    inputs["position_ids"][0] *= inputs["attention_mask"][0]
    labels = flm_labels(inputs)
    logits = flm_logits(model, inputs, labels)
    assert logits[0].isnan().all()
    assert not logits[1:][labels[1:] != -100].isnan().any()


# ---- no leak -----------------------------------------------------------------------------------


@pytest.mark.parametrize("j", [2, 4])
def test_a_word_changes_no_state_of_the_pass_that_must_not_see_it(j):
    config, model = flm_model(**LEAK_TEST_INIT)
    inputs = random_inputs(config)
    changed, _ = with_word(inputs, flm_labels(inputs), j, 3)
    with torch.no_grad():
        before = model.lxmert.unidirectional_passes(**inputs).hidden_states
        after = model.lxmert.unidirectional_passes(**changed).hidden_states
    length = inputs["input_ids"].shape[1]
    later_words = inputs["attention_mask"][:, j + 1 :].bool()
    for layer_before, layer_after in zip(before, after, strict=True):
        left_before, right_before = layer_before.split(length, dim=1)
        left_after, right_after = layer_after.split(length, dim=1)
        # words before j in the left-to-right pass, words after j in the right-to-left pass: not a bit moves
        assert torch.equal(left_before[:, 1:j], left_after[:, 1:j])
        assert torch.equal(right_before[:, j + 1 :][later_words], right_after[:, j + 1 :][later_words])
        assert (left_before[1, j:] - left_after[1, j:]).abs().max() > 1e-3
        assert (right_before[1, : j + 1] - right_after[1, : j + 1]).abs().max() > 1e-3


@pytest.mark.parametrize("j", [1, 3, 6])
def test_the_flm_logits_of_a_word_never_depend_on_that_word(j):
    config, model = flm_model(**LEAK_TEST_INIT)
    inputs = random_inputs(config)
    labels = flm_labels(inputs)
    changed, changed_labels = with_word(inputs, labels, j, 3)
    before, after = flm_logits(model, inputs, labels), flm_logits(model, changed, changed_labels)
    assert torch.allclose(before[:, j], after[:, j], rtol=0, atol=0, equal_nan=True)
    others = [i for i in range(1, LENGTHS[1]) if i != j]
    assert (before[1, others] - after[1, others]).abs().amax(-1).min() > 1e-4


def test_regions_that_read_the_words_would_leak_them(monkeypatch):
    """The guard of the two tests above, which find no difference at all: with regions attending to the
    text, the states before word j and the logits of word j move."""
    config, model = flm_model(**LEAK_TEST_INIT)
    inputs = random_inputs(config)
    labels = flm_labels(inputs)
    j = 4
    changed, changed_labels = with_word(inputs, labels, j, 3)
    leaky_regions(monkeypatch)
    with torch.no_grad():
        left_before = model.lxmert.unidirectional_passes(**inputs).hidden_states[-1][:, 1:j]
        left_after = model.lxmert.unidirectional_passes(**changed).hidden_states[-1][:, 1:j]
    assert (left_before - left_after).abs().max() > 1e-2
    before, after = flm_logits(model, inputs, labels), flm_logits(model, changed, changed_labels)
    assert (before[:, j] - after[:, j]).nan_to_num().abs().max() > 1e-2


# ---- loss --------------------------------------------------------------------------------------


def _reconstructed_by_hand(model, passes, b: int, i: int) -> torch.Tensor:
    """The one-layer reconstructor at word i of row b, attention written out over the keys FLM allows."""
    head = model.heads["flm"]
    reconstructor, layer = head.reconstructor, head.reconstructor.layers[0]
    length = passes.attention_mask.shape[1]
    valid = passes.attention_mask[b].bool()
    keys = [j for j in range(1, i) if valid[j]] + [length + j for j in range(i + 1, length) if valid[j]]
    context = passes.hidden_states[-1][b, keys]
    query = reconstructor.LayerNorm(passes.position_embeddings[b, i] + reconstructor.mask_embedding)
    attention = layer.cross_attention.att
    heads, size = model.config.num_attention_heads, attention.head_dim
    q = attention.query(query).view(heads, size)
    k = attention.key(context).view(len(keys), heads, size)
    v = attention.value(context).view(len(keys), heads, size)
    weights = torch.softmax(torch.einsum("hd,khd->hk", q, k) / math.sqrt(size), dim=-1)
    attended = torch.einsum("hk,khd->hd", weights, v).reshape(-1)
    attended = layer.cross_attention.output.LayerNorm(layer.cross_attention.output.dense(attended) + query)
    hidden = layer.output.dense(F.gelu(layer.intermediate.dense(attended)))
    return layer.output.LayerNorm(hidden + attended)


def _word_logits(model, states: torch.Tensor) -> torch.Tensor:
    head = model.heads["flm"]
    return head.decoder(head.transform(states)) + head.bias


def test_flm_loss_by_hand():
    config, model = flm_model()
    inputs = random_inputs(config)
    labels = flm_labels(inputs)
    with torch.no_grad():
        output = model(**inputs, flm_labels=labels)
        passes = model.lxmert.unidirectional_passes(**inputs)
        terms = []
        for b, i in torch.nonzero(labels != -100).tolist():
            logits = _word_logits(model, _reconstructed_by_hand(model, passes, b, i))
            terms.append(torch.logsumexp(logits, 0) - logits[labels[b, i]])
    assert len(terms) == sum(length - 1 for length in LENGTHS)  # 100%: every word
    assert torch.allclose(output.losses["flm"], torch.stack(terms).mean(), atol=1e-5)


def test_directional_losses_by_hand():
    config, model = flm_model(flm_directional_losses=True)
    inputs = random_inputs(config)
    labels = flm_labels(inputs)
    with torch.no_grad():
        output = model(**inputs, flm_labels=labels)
        passes = model.lxmert.unidirectional_passes(**inputs)
        left_to_right, right_to_left = passes.hidden_states[-1].chunk(2, dim=1)
        reconstruction, next_word, previous_word = [], [], []
        for b, i in torch.nonzero(labels != -100).tolist():
            logits = _word_logits(model, _reconstructed_by_hand(model, passes, b, i))
            reconstruction.append(F.cross_entropy(logits, labels[b, i]))
            if i + 1 < labels.shape[1] and labels[b, i + 1] != -100:
                next_word.append(F.cross_entropy(_word_logits(model, left_to_right[b, i]), labels[b, i + 1]))
            if labels[b, i - 1] != -100:
                previous_word.append(
                    F.cross_entropy(_word_logits(model, right_to_left[b, i]), labels[b, i - 1])
                )
    assert len(next_word) == len(previous_word) == sum(length - 2 for length in LENGTHS)
    expected = sum(torch.stack(terms).mean() for terms in (reconstruction, next_word, previous_word)) / 3
    assert torch.allclose(output.losses["flm"], expected, atol=1e-5)


def test_sdpa_and_eager_give_the_same_flm_loss():
    config, model = flm_model(flm_directional_losses=True)
    inputs = random_inputs(config)
    losses = {}
    for attention in ("sdpa", "eager"):
        model.set_attn_implementation(attention)
        with torch.no_grad():
            losses[attention] = model(**inputs, flm_labels=flm_labels(inputs)).losses["flm"]
    assert torch.allclose(losses["sdpa"], losses["eager"], atol=1e-5)


def test_corruption_applies_in_training_only():
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    config, clean = flm_model(**no_dropout)
    _, corrupted = flm_model(flm_corruption_rate=0.5, **no_dropout)
    corrupted.load_state_dict(clean.state_dict())
    inputs = random_inputs(config)
    labels = flm_labels(inputs)
    with torch.no_grad():
        evaluated = corrupted(**inputs, flm_labels=labels).loss
        assert torch.equal(evaluated, clean(**inputs, flm_labels=labels).loss)
        corrupted.train()
        clean.train()
        assert torch.equal(clean(**inputs, flm_labels=labels).loss, clean(**inputs, flm_labels=labels).loss)
        trained = [corrupted(**inputs, flm_labels=labels).loss for _ in range(2)]
    assert not torch.equal(trained[0], trained[1])  # a fresh span each step


def test_reconstructor_layers_read_the_last_encoder_layers():
    config, model = flm_model(num_layers=3, flm_reconstructor_layers=2)
    inputs = random_inputs(config)
    contexts = []
    hooks = [
        layer.cross_attention.register_forward_hook(lambda _m, args, _o: contexts.append(args[1]))
        for layer in model.heads["flm"].reconstructor.layers
    ]
    with torch.no_grad():
        model(**inputs, flm_labels=flm_labels(inputs))
        passes = model.lxmert.unidirectional_passes(**inputs)
    for hook in hooks:
        hook.remove()
    assert len(contexts) == 2
    assert torch.allclose(contexts[0], passes.hidden_states[1]) and torch.allclose(
        contexts[1], passes.hidden_states[2]
    )


def test_flm_gradient_reaches_the_cross_modality_layers_and_the_embeddings():
    config, model = flm_model()
    model.train()
    inputs = random_inputs(config)
    model(**inputs, flm_labels=flm_labels(inputs)).loss.backward()
    layer = model.lxmert.encoder.x_layers[0]
    for parameter in (
        layer.lang_self_att.self.query.weight,
        layer.visual_attention.att.query.weight,
        layer.visn_self_att.self.query.weight,
        model.lxmert.encoder.visn_fc.visn_fc.weight,
        model.lxmert.embeddings.word_embeddings.weight,
        model.heads["flm"].reconstructor.mask_embedding,
        model.heads["flm"].reconstructor.layers[0].cross_attention.att.key.weight,
    ):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


# ---- beside MLM and the other heads ------------------------------------------------------------


def test_flm_and_mlm_train_together_and_flm_reads_the_unmasked_text():
    config = tiny_config(pretraining_tasks=["mlm", "flm"])
    model = LxmertSForPreTraining(config).eval()
    inputs = random_inputs(config)
    labels = flm_labels(inputs)
    not_cls = inputs["attention_mask"] * (torch.arange(inputs["input_ids"].shape[1]) > 0)
    masked, mlm_labels = mask_tokens(
        inputs["input_ids"],
        not_cls,
        mask_token_id=4,
        vocab_size=config.vocab_size,
        special_ids=torch.tensor([0]),
        generator=torch.Generator().manual_seed(0),
        probability=0.5,
    )
    assert (masked != inputs["input_ids"]).any()
    with torch.no_grad():
        both = model(**{**inputs, "input_ids": masked}, mlm_labels=mlm_labels, flm_labels=labels)
        flm_only = model(**inputs, flm_labels=labels)
    assert set(both.losses) == {"mlm", "flm"}
    assert torch.allclose(both.loss, both.losses["mlm"] + both.losses["flm"])
    assert torch.allclose(both.losses["flm"], flm_only.losses["flm"], atol=1e-6)


def test_the_ordinary_pass_and_the_other_heads_do_not_change_with_flm():
    itm_only = LxmertSForPreTraining(tiny_config(pretraining_tasks=["itm"])).eval()
    with_flm = LxmertSForPreTraining(tiny_config(pretraining_tasks=["itm", "flm"])).eval()
    missing, unexpected = with_flm.load_state_dict(itm_only.state_dict(), strict=False)
    assert not unexpected and all(name.startswith("heads.flm.") for name in missing)
    inputs = random_inputs(itm_only.config)
    itm_labels = torch.tensor([1, 0, 1])
    with torch.no_grad():
        expected = itm_only(**inputs, itm_labels=itm_labels)
        both = with_flm(**inputs, itm_labels=itm_labels, flm_labels=flm_labels(inputs))
        no_flm_labels = with_flm(**inputs, itm_labels=itm_labels)
    assert set(both.losses) == {"itm", "flm"}
    for output in (both, no_flm_labels):
        assert torch.equal(output.itm_logits, expected.itm_logits)
        assert torch.equal(output.losses["itm"], expected.losses["itm"])
        assert torch.equal(output.language_output, expected.language_output)
        assert torch.equal(output.vision_output, expected.vision_output)


# ---- weights and config ------------------------------------------------------------------------


@pytest.mark.parametrize("tasks", [["flm"], ["mlm", "flm"]])
def test_the_flm_decoder_is_the_word_embedding_before_and_after_a_round_trip(tmp_path, tasks):
    model = LxmertSForPreTraining(tiny_config(pretraining_tasks=tasks)).eval()
    embeddings = model.lxmert.embeddings.word_embeddings.weight
    assert model.heads["flm"].decoder.weight is embeddings
    assert model.get_output_embeddings() is model.heads[tasks[0]].decoder
    inputs = random_inputs(model.config)
    labels = flm_labels(inputs)
    with torch.no_grad():
        model.heads["flm"].bias.normal_()  # a trained bias must survive the round trip too
        expected = model(**inputs, flm_labels=labels).loss
    model.save_pretrained(tmp_path)
    loaded = LxmertSForPreTraining.from_pretrained(tmp_path).eval()
    assert loaded.heads["flm"].decoder.weight is loaded.lxmert.embeddings.word_embeddings.weight
    with torch.no_grad():
        assert torch.allclose(loaded(**inputs, flm_labels=labels).loss, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"flm_reconstructor_layers": 0}, "flm_reconstructor_layers"),
        ({"flm_reconstructor_layers": 3, "num_layers": 2}, "flm_reconstructor_layers.*num_layers"),
        ({"flm_corruption_rate": -0.1}, "flm_corruption_rate"),
        ({"flm_corruption_rate": 1.5}, "flm_corruption_rate"),
    ],
)
def test_config_refuses_impossible_flm_settings(settings, message):
    with pytest.raises(Exception, match=message):
        tiny_config(**settings)


def test_flm_labels_must_match_the_text():
    config, model = flm_model()
    inputs = random_inputs(config)
    with pytest.raises(ValueError, match=r"flm_labels.*\(3, 8\).*\(3, 7\)"):
        model(**inputs, flm_labels=flm_labels(inputs)[:, :7])


# ---- collator piece ----------------------------------------------------------------------------

WORDS = ["a", "man", "with", "hot", "dog", "red", "car"]


def test_flm_targets_label_every_word_and_leave_the_input_alone():
    # [CLS] a man [UNK] dog [SEP] [PAD]
    input_ids = torch.tensor([[2, 5, 6, 1, 9, 3, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    original = input_ids.clone()
    labels = flm_targets(input_ids, attention_mask, special_ids=torch.tensor([0, 1, 2, 3, 4]))
    assert labels.tolist() == [[-100, 5, 6, -100, 9, -100, -100]]
    assert torch.equal(input_ids, original)


@pytest.fixture
def collator_setup(tmp_path):
    processor = LxmertSProcessor(wordpiece_tokenizer_from_vocabulary(WORDS), num_regions=4, max_length=8)
    num_images, regions, feature_dim = 3, 4, 6
    store = write_store(
        tmp_path / "store",
        [f"img{index}" for index in range(num_images)],
        features=np.random.default_rng(0).normal(size=(num_images, regions, feature_dim)).astype(np.float32),
        boxes=np.tile(np.array([0.1, 0.1, 0.5, 0.5], np.float32), (num_images, regions, 1)),
        object_ids=np.zeros((num_images, regions), np.int64),
        object_confidences=np.ones((num_images, regions), np.float32),
        attribute_ids=np.zeros((num_images, regions), np.int64),
        attribute_confidences=np.ones((num_images, regions), np.float32),
        num_boxes=np.full(num_images, regions),
        image_sizes=np.tile([480, 640], (num_images, 1)),
    )
    texts = ["a man with a hot dog", "red car", "a dog"]
    rows = [{"image_id": f"img{i}", "image_index": i, "text": text} for i, text in enumerate(texts)]
    return processor, store, rows


def test_the_collator_gives_flm_every_word_and_mlm_masks_only_its_own_input(collator_setup):
    processor, store, rows = collator_setup
    unmasked = torch.from_numpy(processor.encode_text([row["text"] for row in rows])["input_ids"])
    flm_batch = MSPCollator(store, processor, tasks=["flm"])(rows, seed=0)
    assert torch.equal(flm_batch["input_ids"], unmasked)
    words = flm_batch["attention_mask"].bool() & (unmasked > 4)  # ids 0-4 are the special tokens
    assert torch.equal(flm_batch["flm_labels"], torch.where(words, unmasked, -100))
    assert (flm_batch["flm_labels"] != -100).sum() == 6 + 2 + 2

    both = MSPCollator(store, processor, tasks=["mlm", "flm"], mlm_probability=0.5)(rows, seed=0)
    assert not torch.equal(both["input_ids"], unmasked)
    assert torch.equal(both["flm_labels"], flm_batch["flm_labels"])
    restored = torch.where(both["flm_labels"] != -100, both["flm_labels"], both["input_ids"])
    assert torch.equal(restored, unmasked)

    config = tiny_config(
        pretraining_tasks=["mlm", "flm"], vocab_size=len(processor.tokenizer), visual_feat_dim=6
    )
    output = LxmertSForPreTraining(config)(**both)
    assert set(output.losses) == {"mlm", "flm"} and torch.isfinite(output.loss)


def test_a_curriculum_trains_flm_in_place_of_mlm_and_beside_it(tmp_path):
    token, _, sentence = tiny_stages(epochs=(1, 1, 1))
    token["tasks"] = ["flm", "mrfr", "moc", "ifrs"]
    sentence["tasks"] = ["mlm", "flm", "mrfr", "moc", "itm", "tits"]
    curriculum = load_curriculum(write_tiny_curriculum(tmp_path, stages=[token, sentence]))
    result = run_curriculum(curriculum, tmp_path / "out")
    for stage, tasks in zip(result.stages, (token["tasks"], sentence["tasks"]), strict=True):
        assert set(stage.final_losses) == {"loss", *(f"loss/{task}" for task in tasks)}
        assert all(math.isfinite(value) for value in stage.final_losses.values())
    final = LxmertSForPreTraining.from_pretrained(result.stages[-1].folder)
    assert final.heads["flm"].decoder.weight is final.lxmert.embeddings.word_embeddings.weight
