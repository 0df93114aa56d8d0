"""`lxmert_s_msp.evidence.grounding`: the cross-attention a word pays to the regions of the class it names."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from tiny_curriculum import TINY_MODEL, TINY_WORLD

from lxmert_s_msp.data.collators import text_inputs, visual_inputs
from lxmert_s_msp.data.downstream_data import retrieval_split
from lxmert_s_msp.data.readers import read_class_vocab
from lxmert_s_msp.data.store import FeatureStore
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.data.tokenizer import load_tokenizer
from lxmert_s_msp.evidence import grounding
from lxmert_s_msp.evidence.grounding import (
    held_out_r2,
    main,
    named_region_attention,
    pooled_output_spread,
    position_probe,
    relation_pointing_probe,
    relation_subject_probe,
    relation_word_probe,
)
from modeling_lxmert_s import LxmertSConfig, LxmertSForPreTraining
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), WorldSettings(**TINY_WORLD))


def _model(world, folder, blind: bool = False, tasks=("mlm", "itm"), **settings):
    processor = LxmertSProcessor(load_tokenizer(world / "tokenizer"))
    store = FeatureStore(world / "store")
    config = LxmertSConfig(
        **TINY_MODEL,
        vocab_size=len(processor.tokenizer),
        visual_feat_dim=store.feature_dim,
        pretraining_tasks=list(tasks),
        **settings,
    )
    model = LxmertSForPreTraining(config)
    if blind:  # zero queries: every key gets the same score, so the attention is uniform
        for layer in model.lxmert.encoder.x_layers:
            torch.nn.init.zeros_(layer.visual_attention.att.query.weight)
            torch.nn.init.zeros_(layer.visual_attention.att.query.bias)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_uniform_attention_scores_exactly_one(world, tmp_path):
    measured = named_region_attention(_model(world, tmp_path / "blind", blind=True), world, images=4)
    assert measured.words > 0
    assert measured.ratios == pytest.approx([1.0] * TINY_MODEL["num_layers"], abs=1e-5)


def test_the_weight_is_the_attention_on_the_named_class_regions(world, tmp_path):
    folder = _model(world, tmp_path / "random")
    # sharpen the attention so the weights differ from the uniform share (x100: ratio 0.975 on this world;
    # x30 gave 0.9992, too close to 1 to tell)
    with torch.no_grad():
        model = LxmertSForPreTraining.from_pretrained(folder)
        for layer in model.lxmert.encoder.x_layers:
            layer.visual_attention.att.query.weight.mul_(100)
        model.save_pretrained(folder)
    measured = named_region_attention(folder, world, images=4)

    processor = LxmertSProcessor.from_pretrained(folder)
    model = LxmertSForPreTraining.from_pretrained(folder, attn_implementation="eager").eval()
    names = read_class_vocab(world / "objects_vocab.txt")
    rows = retrieval_split(world, "test").select(range(4))
    image_rows = np.asarray(rows["image_index"])
    store = FeatureStore(world / "store")
    inputs = text_inputs(processor, [captions[0] for captions in rows["captions"]])
    inputs |= visual_inputs(store, image_rows, processor.num_regions)
    with torch.no_grad():
        attention = model.lxmert(**inputs, output_attentions=True).cross_encoder_attentions[-1]
    offset = attention.shape[-1] - store.num_regions
    weights = []
    for caption, tokens in enumerate(inputs["input_ids"].tolist()):
        for position, token in enumerate(tokens):
            word = processor.tokenizer.convert_ids_to_tokens(token)
            if word not in names:
                continue
            valid = inputs["visual_attention_mask"][caption].bool().numpy()
            hit = valid & (np.asarray(store.object_ids[image_rows[caption]]) == names.index(word))
            if hit.any():
                weights.append(
                    attention[caption, :, position, offset:][:, torch.from_numpy(hit)].sum(-1).mean().item()
                )
    assert measured.words == len(weights)
    assert measured.weights[-1] == pytest.approx(np.mean(weights), rel=1e-5)
    assert measured.ratios[-1] != pytest.approx(1.0, abs=1e-3)


def test_a_vocabulary_no_caption_names_is_an_error(world, tmp_path):
    elsewhere = tmp_path / "world"
    shutil.copytree(world, elsewhere, symlinks=True)
    (elsewhere / "objects_vocab.txt").write_text("\n".join(f"thing{i}" for i in range(50)) + "\n")
    with pytest.raises(ValueError, match="no caption word"):
        named_region_attention(_model(world, tmp_path / "model"), elsewhere, images=4)


def test_the_pooled_spread_tells_a_live_pooler_from_a_collapsed_or_saturated_one(world, tmp_path):
    live = pooled_output_spread(_model(world, tmp_path / "live"), world, images=4)
    assert live.spread > 1e-3 and live.saturated == 0.0

    folder = _model(world, tmp_path / "collapsed")
    model = LxmertSForPreTraining.from_pretrained(folder)
    with torch.no_grad():  # poolers that ignore their input: the same pooled vector for every input
        for pooler in (model.lxmert.pooler, model.lxmert.visual_pooler):
            pooler.dense.weight.zero_()
            pooler.dense.bias.fill_(0.5)
    model.save_pretrained(folder)
    assert pooled_output_spread(folder, world, images=4).spread == pytest.approx(0.0, abs=1e-6)

    with torch.no_grad():  # a huge bias saturates every unit
        for pooler in (model.lxmert.pooler, model.lxmert.visual_pooler):
            pooler.dense.bias.fill_(50.0)
    model.save_pretrained(folder)
    assert pooled_output_spread(folder, world, images=4).saturated == 1.0


def test_the_command_prints_every_check(world, tmp_path, capsys):
    folder = _model(world, tmp_path / "blind", blind=True)
    main([str(folder), "--data-dir", str(world), "--images", "4"])
    printed = capsys.readouterr().out
    assert "per layer: " + ", ".join(["1.00"] * TINY_MODEL["num_layers"]) + " (" in printed
    assert "pooled output: spread over inputs" in printed
    assert "masked relation word, MLM among 4 words" in printed
    assert "masked subject of a relation, MLM among " in printed
    assert "box centre x read linearly from the states" in printed


def _relation_accuracy(folder, world, fed_image):
    """The probe computed by hand: MLM's pick among the four relation words at the first one of each caption
    of the test split's first 4 images, fed the image `fed_image(i)` for a caption of image i."""
    processor = LxmertSProcessor.from_pretrained(folder)
    model = LxmertSForPreTraining.from_pretrained(folder).eval()
    tokenizer = processor.tokenizer
    words = ["left", "right", "above", "below"]
    ids = tokenizer.convert_tokens_to_ids(words)
    rows = retrieval_split(world, "test").select(range(4))
    store = FeatureStore(world / "store")
    right = total = 0
    for image, captions in enumerate(rows["captions"]):
        for caption in captions:
            inputs = text_inputs(processor, [caption])
            tokens = inputs["input_ids"][0].tolist()
            where = [position for position, token in enumerate(tokens) if token in ids]
            if not where:
                continue
            truth = tokens[where[0]]
            inputs["input_ids"][0, where[0]] = tokenizer.mask_token_id
            fed = np.asarray([rows["image_index"][fed_image(image)]])
            inputs |= visual_inputs(store, fed, processor.num_regions)
            with torch.no_grad():
                hidden = model.lxmert(**inputs).language_output[0, where[0]]
                scores = model.heads.mlm.logits(hidden[None])[0, ids]
            right += ids[int(scores.argmax())] == truth
            total += 1
    return 100 * right / total, total


def test_the_relation_probe_asks_mlm_for_the_masked_relation_word(world, tmp_path, monkeypatch):
    folder = _model(world, tmp_path / "model")
    fed = []

    def recording(store, rows, num_regions):
        fed.append(rows.tolist())
        return visual_inputs(store, rows, num_regions)

    monkeypatch.setattr("lxmert_s_msp.evidence.grounding.visual_inputs", recording)
    probe = relation_word_probe(folder, world, images=4)
    own, captions = _relation_accuracy(folder, world, lambda image: image)
    other, _ = _relation_accuracy(folder, world, lambda image: (image + 1) % 4)
    assert probe.words == ["left", "right", "above", "below"]
    assert probe.captions == captions > 0
    assert probe.own_image == pytest.approx(own) and probe.other_image == pytest.approx(other)
    assert probe.chance == 25.0 and 25.0 <= probe.most_frequent <= 100.0
    # each caption with its own image, then with the next image of the split
    split_rows = retrieval_split(world, "test").select(range(4))["image_index"]
    following = {row: split_rows[(i + 1) % 4] for i, row in enumerate(split_rows)}
    assert len(fed) == 2 and len(fed[0]) == captions and set(fed[0]) <= set(split_rows)
    assert fed[1] == [following[row] for row in fed[0]]


def test_the_relation_probe_needs_an_mlm_head(world, tmp_path):
    with pytest.raises(ValueError, match="no MLM head"):
        relation_word_probe(_model(world, tmp_path / "itm", tasks=("itm",)), world, images=4)


def _subject_accuracy(folder, world):
    """The subject probe computed by hand, caption by caption on the test split's first 4 images: the object
    and attribute words right before the first relation word masked, MLM's pick among the object words at the
    last of them, with the relation word as written and with its opposite."""
    processor = LxmertSProcessor.from_pretrained(folder)
    model = LxmertSForPreTraining.from_pretrained(folder).eval()
    tokenizer = processor.tokenizer
    objects = read_class_vocab(world / "objects_vocab.txt")
    names = [*objects, *read_class_vocab(world / "attributes_vocab.txt")]
    one_piece = [name for name in names if len(tokenizer.tokenize(name)) == 1]
    object_ids = sorted({tokenizer.convert_tokens_to_ids(name) for name in one_piece if name in objects})
    concept_ids = set(tokenizer.convert_tokens_to_ids(one_piece))
    opposite = {"left": "right", "right": "left", "above": "below", "below": "above"}
    opposite_ids = {ids(a): ids(b) for a, b in opposite.items() for ids in [tokenizer.convert_tokens_to_ids]}
    rows = retrieval_split(world, "test").select(range(4))
    store = FeatureStore(world / "store")
    right, total = [0, 0], 0
    for image, captions in enumerate(rows["captions"]):
        for caption in captions:
            inputs = text_inputs(processor, [caption])
            tokens = inputs["input_ids"][0].tolist()
            where = [position for position, token in enumerate(tokens) if token in opposite_ids]
            if not where or tokens[where[0] - 1] not in object_ids:
                continue
            relation, start = where[0], where[0] - 1
            while start - 1 > 0 and tokens[start - 1] in concept_ids and relation - (start - 1) <= 4:
                start -= 1
            truth = tokens[relation - 1]
            inputs["input_ids"][0, start:relation] = tokenizer.mask_token_id
            inputs |= visual_inputs(store, np.asarray([rows["image_index"][image]]), processor.num_regions)
            for variant, word in enumerate((tokens[relation], opposite_ids[tokens[relation]])):
                inputs["input_ids"][0, relation] = word
                with torch.no_grad():
                    hidden = model.lxmert(**inputs).language_output[0, relation - 1]
                    scores = model.heads.mlm.logits(hidden[None])[0, object_ids]
                right[variant] += object_ids[int(scores.argmax())] == truth
            total += 1
    return 100 * right[0] / total, 100 * right[1] / total, total, len(object_ids)


def test_the_subject_probe_asks_mlm_for_a_hidden_subject_with_the_relation_and_its_opposite(
    world, tmp_path, monkeypatch
):
    folder = _model(world, tmp_path / "model")
    fed = []
    loading = grounding.load_model

    def recording(*args, **kwargs):
        model = loading(*args, **kwargs)
        model.lxmert.register_forward_pre_hook(
            lambda module, args, kwargs: fed.append(kwargs["input_ids"].clone()), with_kwargs=True
        )
        return model

    monkeypatch.setattr(grounding, "load_model", recording)
    probe = relation_subject_probe(folder, world, images=4)
    relation, opposite, captions, candidates = _subject_accuracy(folder, world)
    assert probe.captions == captions > 0 and probe.candidates == candidates
    assert probe.relation == pytest.approx(relation) and probe.opposite == pytest.approx(opposite)
    assert probe.chance == pytest.approx(100 / candidates)
    # the second pass differs only at the relation words, each now its opposite
    tokenizer = LxmertSProcessor.from_pretrained(folder).tokenizer
    as_written, flipped = fed
    changed = as_written != flipped
    assert (changed.sum(1) == 1).all()
    pairs = zip(as_written[changed].tolist(), flipped[changed].tolist(), strict=True)
    words = {tuple(tokenizer.convert_ids_to_tokens(pair)) for pair in pairs}
    assert words <= {("left", "right"), ("right", "left"), ("above", "below"), ("below", "above")}
    assert (as_written == tokenizer.mask_token_id).sum(1).min() >= 1


def test_the_pointing_probe_scores_a_pick_of_every_region_alike_at_chance(world, tmp_path, monkeypatch):
    assert relation_pointing_probe(_model(world, tmp_path / "plain"), world, images=8) is None  # no readout
    folder = _model(world, tmp_path / "model", pooler_type="alignment", alignment_relations=True)
    loading = grounding.load_model

    def uniform(*args, **kwargs):
        model = loading(*args, **kwargs)

        def pick(language_output, region_output, similarity, found, words, visual_attention_mask, boxes):
            weights = visual_attention_mask.float() / visual_attention_mask.float().sum(1, keepdim=True)
            return (weights[..., None] * region_output).sum(1), weights

        model.lxmert.pooler.relations.forward = pick
        return model

    monkeypatch.setattr(grounding, "load_model", uniform)
    subject = relation_pointing_probe(folder, world, images=8)
    sides = relation_pointing_probe(folder, world, images=8, side_confidence=0.5)
    for probe in (subject, sides):
        assert probe.captions > 0 and 0 < probe.chance < 100
        assert probe.relation == pytest.approx(probe.chance) and probe.opposite == pytest.approx(probe.chance)
    assert sides.chance > subject.chance  # a side holds more regions than the subject names


def test_held_out_r2_is_one_for_a_linear_target_and_near_zero_for_an_unrelated_one():
    generator = np.random.default_rng(0)
    features = generator.normal(size=(400, 6))
    train = np.arange(400) < 200
    linear = features @ generator.normal(size=6) + 3.0
    assert held_out_r2(features, linear, train) > 0.99
    assert held_out_r2(features, generator.normal(size=400), train) < 0.05


def test_the_position_probe_finds_the_box_in_the_region_embeddings_not_in_the_word_ones(world, tmp_path):
    probe = position_probe(_model(world, tmp_path / "model"), world, images=8)
    layers = TINY_MODEL["num_layers"] + 1
    assert len(probe.regions) == len(probe.words) == layers and probe.named > 0
    # the region embedding adds a projection of the box; a word's embedding has never seen the image
    assert probe.regions[0] > 0.5 and probe.words[0] < 0.2
