"""What lets the model ground more than which objects are present: object-tag grounding (TAG), the region
self-attention's relative-geometry bias and the alignment pooler's region counts."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from model_inputs import ALIGNMENT_TASKS, RELATION_SETTINGS, alignment_labels, random_inputs, tiny_config
from test_alignment import _features
from test_collators import ATTRIBUTE_VOCAB, OBJECT_VOCAB, store, within_binomial  # noqa: F401 (a fixture)
from torch.nn import functional as F

from lxmert_s_msp.data.collators import (
    MSPCollator,
    binding_words,
    class_word_ids,
    class_wordpieces,
    region_words,
    relation_sides,
    relation_word_ids,
)
from lxmert_s_msp.data.tokenizer import wordpiece_tokenizer_from_vocabulary
from modeling_lxmert_s import (
    PRETRAINING_TASKS,
    LxmertSForPreTraining,
    LxmertSModel,
    PieceSettings,
    PretrainingBatch,
)
from modeling_lxmert_s.input_checks import LabelChecks
from modeling_lxmert_s.modeling_lxmert_s import (
    LxmertSAlignmentPooler,
    LxmertSAttention,
    LxmertSRegionGeometry,
    TagGroundingHead,
    WordBoxRegressionHead,
    ZeroStartLinear,
    additive_mask,
    word_region_similarity,
)
from modeling_lxmert_s.pretraining_pieces import (
    binding_negatives,
    mask_tokens,
    region_binding_negatives,
    relation_subjects,
    tag_targets,
)
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor

SPECIAL = torch.tensor([0, 1, 2])  # [PAD], [CLS], [SEP]


def test_each_word_names_every_region_the_detector_gave_its_name():
    # class 0 "hot dog" (pieces 10, 11), class 1 "car" (12); regions: car, hot dog, car, padding
    class_pieces = torch.tensor([[10, 11], [12, -1]])
    object_ids = torch.tensor([[1, 0, 1, 0]])
    visual_mask = torch.tensor([[1, 1, 1, 0]])
    input_ids = torch.tensor([[1, 12, 10, 11, 13, 2, 0]])  # [CLS] car hot dog other [SEP] [PAD]
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    targets = tag_targets(input_ids, attention_mask, object_ids, visual_mask, class_pieces, SPECIAL)
    assert targets.shape == (1, 7, 4)
    assert targets[0].int().tolist() == [
        [0, 0, 0, 0],  # [CLS]
        [1, 0, 1, 0],  # "car": both car regions
        [0, 1, 0, 0],  # "hot": the hot dog, not the padding region labelled 0
        [0, 1, 0, 0],  # "dog"
        [0, 0, 0, 0],  # a word no region is called
        [0, 0, 0, 0],  # [SEP]
        [0, 0, 0, 0],  # padding
    ]


def test_tag_is_the_softmax_mass_of_a_words_cosines_on_the_regions_it_names():
    head = TagGroundingHead(tiny_config())
    regions = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    words = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])  # word 0 names region 0; word 1 names regions 1 and 2
    targets = torch.tensor([[[True, False, False], [False, True, True], [False, False, False]]])[:, :2]
    loss = head(_features(words, regions), {"tag_targets": targets})
    temperature = head.temperature
    first = -F.log_softmax(torch.tensor([1.0, 0.0, -1.0]) / temperature, 0)[0]
    c = 1 / math.sqrt(2)
    second = -torch.logsumexp(F.log_softmax(torch.tensor([c, c, -c]) / temperature, 0)[1:], 0)
    assert torch.allclose(loss, (first + second) / 2)
    # a word aligned with the regions it names scores better than one aligned with another region
    misaligned = head(_features(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]), regions), {"tag_targets": targets})
    assert misaligned > loss


def test_tag_without_any_named_region_is_a_zero_in_the_graph_and_bad_targets_are_refused():
    head = TagGroundingHead(tiny_config())
    language = torch.randn(2, 3, 4, requires_grad=True)
    loss = head(
        _features(language, torch.randn(2, 5, 4)), {"tag_targets": torch.zeros(2, 3, 5, dtype=torch.bool)}
    )
    assert loss.item() == 0.0 and loss.requires_grad
    checks = LabelChecks(batch=2, length=3, regions=5)
    try:
        head.check_labels({"tag_targets": torch.zeros(2, 3, 4, dtype=torch.bool)}, checks)
    except ValueError as error:
        assert str(error).startswith("tag_targets: expected shape (2, 3, 5)")
    else:
        raise AssertionError("a (B, L, R-1) target was accepted")


def test_wbr_gives_a_word_the_box_of_the_one_region_it_names_and_no_box_where_it_names_several():
    # class 0 "hot dog" (pieces 10, 11), class 1 "car" (12); regions: car, hot dog, car, padding (labelled 0)
    settings = PieceSettings(
        mask_token_id=3,
        vocab_size=20,
        special_ids=SPECIAL,
        class_wordpieces=torch.tensor([[10, 11], [12, -1]]),
    )
    boxes = torch.tensor(
        [[[0.0, 0.0, 0.2, 0.2], [0.5, 0.1, 0.9, 0.5], [0.6, 0.6, 1.0, 1.0], [0.1, 0.1, 0.3, 0.3]]]
    )
    regions = {
        "boxes": boxes,
        "object_ids": torch.tensor([[1, 0, 1, 0]]),
        "visual_attention_mask": torch.tensor([[True, True, True, False]]),
    }
    input_ids = torch.tensor([[1, 12, 10, 11, 13, 2, 0]])  # [CLS] car hot dog other [SEP] [PAD]
    batch = _batch_with_regions(settings, input_ids, torch.tensor([[1, 1, 1, 1, 1, 1, 0]]), regions)
    PRETRAINING_TASKS["wbr"].piece(batch)
    # "car" names two regions: no one place; "hot" and "dog" name the hot dog (not the padding labelled 0)
    assert batch.labels["wbr_mask"].tolist() == [[False, False, True, True, False, False, False]]
    assert torch.equal(batch.labels["wbr_targets"][0, 2:4], boxes[0, [1, 1]])
    assert not batch.labels["wbr_targets"][0, [0, 1, 4, 5, 6]].any()


def test_wbr_is_the_l1_distance_to_the_named_boxes_centre_and_size_over_the_words_that_name_one():
    torch.manual_seed(0)
    head = WordBoxRegressionHead(tiny_config())
    language = torch.randn(2, 3, head.decoder.in_features)
    targets = torch.rand(2, 3, 2).repeat(1, 1, 2) * torch.tensor([0.5, 0.5, 1.0, 1.0])  # x2, y2 >= x1, y1
    mask = torch.tensor([[True, False, True], [False, False, True]])
    features = _features(language, torch.randn(2, 4, language.shape[-1]))
    loss = head(features, {"wbr_mask": mask, "wbr_targets": targets})
    predicted = head.predict(language)[mask]
    x1, y1, x2, y2 = targets[mask].unbind(-1)
    expected = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)
    assert torch.allclose(loss, (predicted - expected).abs().mean())
    # the loss reads each word's own box: exchanging two words' boxes changes it
    swapped = targets.clone()
    swapped[0, 0], swapped[1, 2] = targets[1, 2], targets[0, 0]
    assert not torch.allclose(head(features, {"wbr_mask": mask, "wbr_targets": swapped}), loss)
    assert head.predictions(features)["word_box_predictions"].shape == (2, 3, 4)
    # a batch without such a word: a zero in the graph, never a NaN
    language.requires_grad_(True)
    empty = head(
        _features(language, torch.randn(2, 4, language.shape[-1])),
        {"wbr_mask": torch.zeros(2, 3, dtype=torch.bool), "wbr_targets": targets},
    )
    assert empty.item() == 0.0 and empty.requires_grad


@pytest.mark.parametrize(
    ("switch", "added"),
    [("visual_geometry_bias", ("encoder.region_geometry.",)), ("text_reads_boxes", (".box_readout.",))],
)
def test_each_added_path_starts_at_zero_so_the_model_starts_as_without_it(switch, added):
    torch.manual_seed(0)
    with_it = LxmertSModel(tiny_config(**{switch: True}, num_layers=2)).eval()
    zero_start = [module for module in with_it.modules() if isinstance(module, ZeroStartLinear)]
    assert zero_start and all(not module.weight.any() and not module.bias.any() for module in zero_start)
    without = LxmertSModel(tiny_config(num_layers=2)).eval()
    missing, unexpected = without.load_state_dict(with_it.state_dict(), strict=False)
    assert not missing and unexpected and all(any(part in key for part in added) for key in unexpected)
    inputs = random_inputs(with_it.config)
    with torch.no_grad():
        ours, theirs = with_it(**inputs), without(**inputs)
    for name in ("language_output", "vision_output", "pooled_output"):
        assert torch.allclose(ours[name], theirs[name], atol=1e-6), name
    with torch.no_grad():  # and once trained away from zero, the path changes what the model computes
        for module in zero_start:
            module.weight.normal_(0, 5.0)
        moved = with_it(**inputs)
    changed = moved.language_output - theirs.language_output, moved.vision_output - theirs.vision_output
    assert max(difference.abs().max() for difference in changed) > 1e-2


def test_a_word_reads_each_heads_attention_weighted_mean_of_the_region_boxes():
    config = tiny_config(text_reads_boxes=True, num_attention_heads=2, hidden_size=8)
    attention = LxmertSAttention(config).eval()
    words, regions = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    mask = additive_mask(torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]), words)
    boxes = torch.rand(2, 5, 4)
    config._attn_implementation = "eager"
    attended, weights, where = attention(words, regions, mask, output_attentions=True, context_boxes=boxes)
    assert where.shape == (2, 3, 2 * 4)
    assert torch.allclose(where.unflatten(-1, (2, 4)).transpose(1, 2), weights @ boxes[:, None], atol=1e-6)
    plain, plain_weights, nothing = attention(words, regions, mask, output_attentions=True)
    assert nothing is None and torch.equal(plain, attended) and torch.equal(plain_weights, weights)
    config._attn_implementation = "sdpa"  # the same in the kernel users run
    fast, _, fast_where = attention(words, regions, mask, context_boxes=boxes)
    assert torch.allclose(fast, attended, atol=1e-6) and torch.allclose(fast_where, where, atol=1e-6)


def test_the_boxes_words_read_are_centres_and_sizes_with_the_whole_image_for_the_visual_cls():
    model = LxmertSModel(tiny_config(text_reads_boxes=True, visual_cls_token=True))
    boxes = model.encoder.region_boxes(torch.tensor([[[0.1, 0.2, 0.5, 0.4]]]))
    assert torch.allclose(boxes, torch.tensor([[[0.5, 0.5, 1.0, 1.0], [0.3, 0.3, 0.4, 0.2]]]))
    assert LxmertSModel(tiny_config()).encoder.region_boxes(torch.rand(1, 1, 4)) is None


def test_the_geometry_bias_depends_on_relative_placement_only_and_steers_attention():
    config = tiny_config(visual_geometry_bias=True, num_attention_heads=2, hidden_size=8)
    geometry = LxmertSRegionGeometry(config)
    with torch.no_grad():  # head 0 favours regions whose centre lies left of the query's (offset x < 0)
        geometry.encode.weight.zero_()
        geometry.encode.bias.zero_()
        geometry.encode.weight[0, 0] = -1.0  # relu(-dx)
        geometry.bias.weight.zero_()
        geometry.bias.bias.zero_()
        geometry.bias.weight[0, 0] = 10.0
    boxes = torch.tensor([[[0.1, 0.4, 0.2, 0.5], [0.4, 0.4, 0.5, 0.5], [0.7, 0.4, 0.8, 0.5]]])
    bias = geometry(boxes)
    assert bias.shape == (1, 2, 3, 3)
    assert torch.allclose(geometry(boxes + torch.tensor([0.1, 0.2, 0.1, 0.2])), bias, atol=1e-5)
    # from the middle region, head 0 prefers the left one; head 1 has no preference
    assert bias[0, 0, 1, 0] > bias[0, 0, 1, 1] == bias[0, 0, 1, 2]
    assert torch.all(bias[0, 1] == 0)

    model = LxmertSModel(config).eval()
    model.encoder.region_geometry.load_state_dict(geometry.state_dict())
    inputs = random_inputs(config)
    regions = inputs["visual_feats"].shape[1]
    centres = torch.linspace(0.1, 0.8, regions)
    inputs["visual_pos"] = torch.stack(
        [centres, torch.full_like(centres, 0.4), centres + 0.1, torch.full_like(centres, 0.5)], -1
    ).expand_as(inputs["visual_pos"])
    inputs["visual_attention_mask"] = torch.ones_like(inputs["visual_attention_mask"])
    model.set_attn_implementation("eager")
    with torch.no_grad():
        weights = model(**inputs, output_attentions=True).vision_attentions[0][:, 0]  # head 0, (B, R', R')
    first = 1  # after the visual [CLS]
    # each region's head 0 attends more to the regions left of it than to those right of it
    for query in range(first + 1, first + regions - 1):
        left = weights[:, query, first:query].sum(-1)
        right = weights[:, query, query + 1 :].sum(-1)
        assert torch.all(left > right)


def test_the_pooler_tells_how_many_regions_match_a_word_where_the_mean_and_the_maximum_cannot():
    def pooled(counts: bool, matching: int) -> torch.Tensor:
        torch.manual_seed(0)
        pooler = LxmertSAlignmentPooler(tiny_config(hidden_size=4, alignment_counts=counts))
        word = torch.tensor([[[0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]]])  # [CLS], then the word
        regions = torch.zeros(1, 6, 4)
        regions[0, :, 1] = 1.0  # orthogonal to the word...
        regions[0, :matching] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # ...but `matching` of them
        masks = torch.ones(1, 2), torch.ones(1, 6)
        pooled, relation_weights = pooler(word, regions, *masks, torch.rand(1, 6, 4))
        assert relation_weights is None  # no relation readout
        return pooled

    without = (pooled(False, 3) - pooled(False, 1)).abs().max()
    with_counts = (pooled(True, 3) - pooled(True, 1)).abs().max()
    assert without < 1e-3  # the softmax average and the maximum barely move
    assert with_counts > 100 * without


@pytest.mark.parametrize("relations", [True, False])
def test_the_pooler_reads_the_boxes_only_through_the_relation_readout(relations):
    torch.manual_seed(0)
    pooler = LxmertSAlignmentPooler(
        tiny_config(hidden_size=8, pooler_type="alignment", alignment_relations=relations)
    )
    words, regions, masks = torch.randn(2, 4, 8), torch.randn(2, 5, 8), (torch.ones(2, 4), torch.ones(2, 5))
    boxes = torch.rand(2, 5, 2).repeat(1, 1, 2) * torch.tensor([0.5, 0.5, 1.0, 1.0])
    moved = boxes.clone()
    moved[:, 0] = torch.tensor([0.0, 0.0, 0.1, 0.1])
    change = (pooler(words, regions, *masks, boxes)[0] - pooler(words, regions, *masks, moved)[0]).abs().max()
    assert (change > 1e-4) if relations else (change == 0)


def test_the_relation_readouts_geometry_starts_at_pytorchs_scale_and_loading_keeps_it(tmp_path):
    model = LxmertSModel(tiny_config(hidden_size=16, **RELATION_SETTINGS))
    first, last = (layer for layer in model.pooler.relations.geometry if isinstance(layer, torch.nn.Linear))
    for layer in (first, last):  # uniform in +-1/sqrt(fan in); BERT's normal(0, 0.02) stays below 0.1
        bound = 1 / math.sqrt(layer.in_features)
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.8 * bound
    model.save_pretrained(tmp_path)
    loaded = LxmertSModel.from_pretrained(tmp_path).pooler.relations.geometry
    assert torch.equal(loaded[0].weight, first.weight) and torch.equal(loaded[2].weight, last.weight)


def _relation_scenes(batch: int, generator: torch.Generator, hidden: int, regions: int = 5):
    """Regions of distinct classes at random places, each state its class's one-hot and its box centre (as
    the model's region states hold theirs), and a text "[CLS] <relation> <class>", whose last word matches
    its class's region best; `wanted` (B, R): the regions on the asked side of that one, by box centre x."""
    classes = torch.argsort(torch.rand(batch, regions, generator=generator), 1)
    centres = torch.rand(batch, regions, 2, generator=generator)
    states = F.one_hot(classes, hidden).float()
    states[..., regions : regions + 2] = centres
    boxes = torch.cat([centres - 0.05, centres + 0.05], -1).clamp(0, 1)
    reference = torch.randint(regions, (batch,), generator=generator)
    relation = torch.randint(4, (batch,), generator=generator)  # left of, right of, above, below
    words = torch.zeros(batch, 3, hidden)
    words[:, 1] = F.one_hot(hidden - 1 - relation, hidden).float()
    words[:, 2] = F.one_hot(classes[torch.arange(batch), reference], hidden).float()
    offset = centres - centres[torch.arange(batch), reference][:, None]  # as the world words it
    horizontal = offset[..., 0].abs() >= offset[..., 1].abs()
    side = torch.stack([offset[..., 0] < 0, offset[..., 0] > 0, offset[..., 1] < 0, offset[..., 1] > 0], -1)
    axis = torch.stack([horizontal, horizontal, ~horizontal, ~horizontal], -1)
    wanted = (side & axis).gather(2, relation[:, None, None].expand(-1, regions, 1)).squeeze(-1)
    return words, states, boxes, wanted


def _mass_on_wanted(readout, words, states, boxes, wanted, visual_mask):
    """The readout's weights on the regions and their share on the wanted regions, for texts that have one."""
    word_mask = torch.tensor([[False, True, True]]).expand(len(words), -1)
    similarity = word_region_similarity(words, states, visual_mask)
    found = torch.softmax(similarity / readout.temperature, dim=-1)
    picked, weights = readout(words, states, similarity, found, word_mask, visual_mask, boxes)
    assert torch.allclose(picked, (weights[..., None] * states).sum(1), atol=1e-6)  # the state it picked
    return weights, (weights * wanted).sum(1)[wanted.any(1)]


@pytest.mark.parametrize("relative", [True, False])
def test_the_relation_readout_learns_to_pick_what_lies_left_right_above_or_below_the_named_object(relative):
    # Absolute places cannot tell "left of the cup" once the cup moves: the relative geometry can.
    hidden, regions = 16, 5
    torch.manual_seed(0)
    config = tiny_config(hidden_size=hidden, num_attention_heads=1, **RELATION_SETTINGS)
    readout = LxmertSModel(config).pooler.relations  # as the model initialises it
    if not relative:
        for parameter in readout.geometry.parameters():
            parameter.data.zero_()
            parameter.requires_grad_(False)
    optimizer = torch.optim.Adam([p for p in readout.parameters() if p.requires_grad], lr=1e-2)
    generator, visual_mask = torch.Generator().manual_seed(0), torch.ones(256, regions, dtype=torch.bool)
    for _ in range(300):
        _, mass = _mass_on_wanted(readout, *_relation_scenes(256, generator, hidden), visual_mask)
        loss = -mass.clamp(min=1e-6).log().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    words, states, boxes, wanted = _relation_scenes(256, torch.Generator().manual_seed(1), hidden)
    visual_mask[:, -1] = False  # a padding region is never picked
    with torch.no_grad():
        weights, mass = _mass_on_wanted(readout, words, states, boxes, wanted & visual_mask, visual_mask)
    assert not weights[:, -1].any()
    if relative:
        assert mass.mean() > 0.9
    else:  # each region's own state and place alone: the named object's place is not among them
        assert mass.mean() < 0.85


WORDS = ["a", "red", "blue", "green", "car", "dog", "left", "right", "of", "two", "three", "."]


def _binding_setup():
    tokenizer = wordpiece_tokenizer_from_vocabulary(WORDS)
    words = binding_words(["car", "dog"], ["red", "blue"], tokenizer)
    return tokenizer, words


def _encode(tokenizer, texts):
    encoded = tokenizer(texts, padding="max_length", max_length=12, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]


def _decode(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=True)


def _batch_with_regions(settings: PieceSettings, input_ids, attention_mask, regions, seed: int = 0):
    return PretrainingBatch(
        inputs={"input_ids": input_ids, "attention_mask": attention_mask},
        image_index=torch.arange(len(input_ids)),
        generator=torch.Generator().manual_seed(seed),
        settings=settings,
        read_regions=lambda fed: {name: value[fed] for name, value in regions.items()},
        describe_region=lambda row, region: "",
    )


def test_rpt_points_at_the_regions_the_subject_of_the_one_relation_word_names():
    tokenizer = wordpiece_tokenizer_from_vocabulary(WORDS)
    settings = PieceSettings(
        mask_token_id=tokenizer.mask_token_id,
        vocab_size=len(tokenizer),
        special_ids=torch.tensor(sorted(tokenizer.all_special_ids)),
        relation_word_ids=relation_word_ids(tokenizer),
        class_wordpieces=class_wordpieces(["car", "dog"], tokenizer),
        class_word_ids=class_word_ids(["car", "dog", "red", "blue"], tokenizer),
    )
    texts = [
        "a red car left of a blue dog .",  # the subject: the car, both of its regions
        "a dog right of a car .",
        "car left of dog left of car",  # two relation words: no one subject
        "a red car .",  # no relation
        "a green left of a dog .",  # a subject no region is called
    ]
    input_ids, attention_mask = _encode(tokenizer, texts)
    regions = {  # regions: car, dog, car, and a padding region labelled car
        "object_ids": torch.tensor([[0, 1, 0, 0]]).expand(len(texts), -1),
        "visual_attention_mask": torch.tensor([[True, True, True, False]]).expand(len(texts), -1),
    }
    batch = _batch_with_regions(settings, input_ids, attention_mask, regions)
    PRETRAINING_TASKS["rpt"].piece(batch)
    # the question the readout answers: the subject hidden, attribute and all
    shown = [
        tokenizer.decode(ids[ids != tokenizer.pad_token_id][1:-1])
        for ids in batch.labels["relation_input_ids"]
    ]
    assert shown[:2] == ["a [MASK] [MASK] left of a blue dog.", "a [MASK] right of a car."]
    assert shown[2:] == ["car left of dog left of car", "a red car.", "a green left of a dog."]
    assert batch.labels["relation_targets"].int().tolist() == [
        [1, 0, 1, 0],
        [0, 1, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]


def test_rpt_with_sides_points_at_everything_on_the_relation_words_side_of_its_one_object():
    tokenizer = wordpiece_tokenizer_from_vocabulary([*WORDS, "cup", "bag", "above", "front"])
    sides = relation_sides(tokenizer, min_confidence=0.5)
    assert sides.directions[tokenizer.convert_tokens_to_ids("above")].tolist() == [0.0, -1.0]  # y grows down
    assert not sides.directions[tokenizer.convert_tokens_to_ids("front")].any()  # no 2-D direction
    settings = PieceSettings(
        mask_token_id=tokenizer.mask_token_id,
        vocab_size=len(tokenizer),
        special_ids=torch.tensor(sorted(tokenizer.all_special_ids)),
        relation_word_ids=relation_word_ids(tokenizer),
        class_wordpieces=class_wordpieces(["car", "dog", "cup", "bag"], tokenizer),
        class_word_ids=class_word_ids(["car", "dog", "cup", "red", "blue"], tokenizer),
        relation_sides=sides,
    )
    texts = [
        "a red car left of a dog .",  # the car at 0.1, the cup at 0.3; not the car right of it, nor doubts
        "a cup above a dog .",  # only the cup is higher than the dog
        "a dog right of a car .",  # two cars: no one place to compare with
        "a dog front of a cup .",  # a relation no box shows
        "a car left of a dog left of a cup",  # two relation words
    ]
    input_ids, attention_mask = _encode(tokenizer, texts)
    centres = torch.tensor(
        [[0.1, 0.5], [0.5, 0.5], [0.9, 0.5], [0.3, 0.1], [0.2, 0.2], [0.1, 0.9], [0.0, 0.5]]
    )
    # car, dog, car, cup, a doubtful bag, a doubtful second dog (the dog is still one), and a padding region
    regions = {
        "object_ids": torch.tensor([[0, 1, 0, 2, 3, 1, 0]]).expand(len(texts), -1),
        "object_confidences": torch.tensor([[0.9, 0.9, 0.6, 0.5, 0.4, 0.3, 0.9]]).expand(len(texts), -1),
        "visual_attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1, 0]]).bool().expand(len(texts), -1),
        "boxes": torch.cat([centres - 0.05, centres + 0.05], -1).expand(len(texts), -1, -1),
    }
    sides = _batch_with_regions(settings, input_ids, attention_mask, regions)
    PRETRAINING_TASKS["rpt"].piece(sides)
    assert sides.labels["relation_targets"].int().tolist() == [
        [1, 0, 0, 1, 0, 0, 0],
        [0, 0, 0, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
    ]
    subjects = _batch_with_regions(
        dataclasses.replace(settings, relation_sides=None), input_ids, attention_mask, regions
    )
    PRETRAINING_TASKS["rpt"].piece(subjects)
    assert subjects.labels["relation_targets"][0].int().tolist() == [
        1,
        0,
        1,
        0,
        0,
        0,
        0,
    ]  # both cars, by name
    # the question is the same either way: the subject hidden
    assert torch.equal(sides.labels["relation_input_ids"], subjects.labels["relation_input_ids"])


def test_rpt_is_minus_the_log_of_the_readouts_weight_on_the_subjects_regions_in_the_question_pass():
    head = PRETRAINING_TASKS["rpt"].head(tiny_config(**RELATION_SETTINGS))
    targets = torch.tensor([[True, False, True], [False, False, False], [False, True, False]])
    # the question pass holds the rows with a target only (0 and 2); the main pass's pick is not read
    weights = torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]], requires_grad=True)
    question = _features(torch.zeros(2, 2, 4), torch.zeros(2, 3, 4), relation_weights=weights)
    features = _features(
        torch.zeros(3, 2, 4), torch.zeros(3, 3, 4), relation_weights=torch.ones(3, 3), question=question
    )
    labels = {"relation_targets": targets}
    loss = head(features, labels)
    assert torch.allclose(loss, -(torch.log(torch.tensor(0.8)) + torch.log(torch.tensor(0.1))) / 2)
    features.question = None  # no text of the batch has a relation
    features.pooled_output.requires_grad_(True)
    none = head(features, {"relation_targets": torch.zeros_like(targets)})
    assert none.item() == 0.0 and none.requires_grad  # a zero in the graph
    # (transformers wraps the config's ValueError in huggingface_hub's validation error)
    with pytest.raises(Exception, match="'rpt' trains the relation readout: set alignment_relations=True"):
        tiny_config(pretraining_tasks=["mlm", "rpt"])


def test_binding_negatives_keep_the_words_and_change_what_binds_to_what():
    tokenizer, words = _binding_setup()
    assert _decode(tokenizer, [int(words.opposites[tokenizer.convert_tokens_to_ids("left")])]) == "right"
    texts = ["a red car left of a blue dog .", "a red car .", "a car .", "two dogs"]
    input_ids, attention_mask = _encode(tokenizer, texts)
    seen: dict[int, set[str]] = {row: set() for row in range(len(texts))}
    for seed in range(40):
        negatives, has = binding_negatives(
            input_ids, attention_mask, words, torch.Generator().manual_seed(seed)
        )
        assert has.tolist() == [True, False, False, True]
        for row in range(len(texts)):
            seen[row].add(_decode(tokenizer, negatives[row]))
            if has[row]:
                assert not torch.equal(negatives[row], input_ids[row])
    assert seen[0] == {  # each of the three changes is drawn
        "a blue car left of a red dog.",
        "a red dog left of a blue car.",
        "a red car right of a blue dog.",
    }
    assert seen[1] == {"a red car."} and seen[2] == {"a car."}  # nothing to exchange: the caption itself
    assert seen[3] == {"three"}  # a number becomes another number ("dogs" is no word of this vocabulary)


def test_mlm_hides_the_same_positions_of_a_caption_and_its_binding_negative():
    tokenizer, words = _binding_setup()
    input_ids, attention_mask = _encode(tokenizer, ["a red car left of a blue dog ."] * 64)
    settings = PieceSettings(
        mask_token_id=tokenizer.mask_token_id,
        vocab_size=len(tokenizer),
        special_ids=torch.tensor(sorted(tokenizer.all_special_ids)),
        mlm_probability=0.3,
        binding_words=words,
    )
    batch = _batch_with_regions(settings, input_ids, attention_mask, regions={})
    PRETRAINING_TASKS["itm_vsc"].piece(batch)
    PRETRAINING_TASKS["mlm"].piece(batch)
    chosen = batch.labels["mlm_labels"] != -100
    caption, negative = batch.inputs["input_ids"], batch.labels["binding_input_ids"]
    assert torch.equal(negative[chosen], caption[chosen])  # hidden alike
    kept = batch.labels["binding_mask"]
    assert torch.all((negative != caption).any(1) == kept)  # a negative whose change MLM hid is dropped
    assert 0 < int(kept.sum()) < 64


def test_itm_vsc_scores_each_binding_negative_with_its_own_image_as_a_mismatch():
    config = tiny_config(pretraining_tasks=ALIGNMENT_TASKS)
    torch.manual_seed(0)
    model = LxmertSForPreTraining(config).eval()
    inputs = random_inputs(config)
    labels = alignment_labels(inputs)
    negatives = inputs["input_ids"].flip(1)
    has = torch.tensor([True, False, True][: len(negatives)])
    with torch.no_grad():
        plain = model(**inputs, **labels).losses["itm_vsc"]
        torch.manual_seed(1)
        with_binding = model(**inputs, **labels, binding_input_ids=negatives, binding_mask=has).losses[
            "itm_vsc"
        ]
        # what the binding pass encoded: each negative with its own row's image
        torch.manual_seed(1)
        features = {}
        model._binding_pass = _recording(model._binding_pass, features)
        model(**inputs, **labels, binding_input_ids=negatives, binding_mask=has)
    binding = features["binding"]
    assert len(binding.pooled_output) == int(has.sum())
    direct = model.lxmert(
        **{
            name: value[has]
            for name, value in {**inputs, "input_ids": negatives}.items()
            if name in ("input_ids", "attention_mask", "token_type_ids", "position_ids")
        },
        visual_feats=inputs["visual_feats"][has],
        visual_pos=inputs["visual_pos"][has],
        visual_attention_mask=inputs["visual_attention_mask"][has],
    )
    assert torch.allclose(binding.pooled_output, direct.pooled_output, atol=1e-6)
    assert not torch.isclose(plain, with_binding)


def _recording(method, recorded):
    def wrapped(features, inputs):
        method(features, inputs)
        recorded["binding"] = features.binding

    return wrapped


def test_rpt_sides_need_rpt(store):  # noqa: F811
    processor = LxmertSProcessor(wordpiece_tokenizer_from_vocabulary(WORDS), num_regions=6, max_length=12)
    with pytest.raises(ValueError, match="relation_side_confidence: sets RPT's targets; it needs 'rpt'"):
        MSPCollator(store, processor, ["mlm"], OBJECT_VOCAB, ATTRIBUTE_VOCAB, relation_side_confidence=0.5)


@pytest.mark.parametrize("option", ["binding_negatives", "region_negatives"])
def test_binding_negatives_of_either_side_need_itm_vsc_and_both_vocabularies(store, option):  # noqa: F811
    tokenizer = wordpiece_tokenizer_from_vocabulary(WORDS)
    processor = LxmertSProcessor(tokenizer, num_regions=6, max_length=12)
    with pytest.raises(ValueError, match=f"{option}: .*need 'itm_vsc' in tasks"):
        MSPCollator(store, processor, ["mlm"], OBJECT_VOCAB, ATTRIBUTE_VOCAB, **{option: True})
    with pytest.raises(ValueError, match=f"{option}: .*attribute_vocab"):
        MSPCollator(store, processor, ["mlm", "vsc", "itm_vsc"], OBJECT_VOCAB, **{option: True})


def _region_setup():
    """Three captions and their images (objects: 0 car, 1 dog, 2 "hot dog", two pieces; attributes: 0 red,
    1 blue, 2 green); feature f of a region is the constant f and its box f / 10, padding regions -1."""
    tokenizer = wordpiece_tokenizer_from_vocabulary(WORDS)
    words = region_words(["car", "dog", "hot dog"], ["red", "blue", "green"], tokenizer)
    input_ids, attention_mask = _encode(
        tokenizer, ["a red car left of a blue dog .", "a green car .", "a dog ."]
    )
    regions = {
        # row 0: red car, its duplicate box, blue dog, padding; row 1: green car, red dog; row 2: blue dog
        "object_ids": torch.tensor([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0]]),
        "attribute_ids": torch.tensor([[0, 0, 1, 0], [2, 0, 0, 0], [1, 0, 0, 0]]),
        "visual_attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]]).bool(),
    }
    features = torch.tensor([[1.0, 2, 3, -1], [4, 5, -1, -1], [6, -1, -1, -1]])[:, :, None]
    regions["features"] = features.expand(-1, -1, 2)
    regions["boxes"] = features.expand(-1, -1, 4) / 10  # a region of feature f has the box f / 10
    return tokenizer, words, input_ids, attention_mask, regions


def test_region_words_are_the_one_piece_class_names():
    tokenizer, words, *_ = _region_setup()
    ids = tokenizer.convert_tokens_to_ids
    assert words.objects.tolist() == [ids("car"), ids("dog"), -1]  # "hot dog" is two pieces
    assert words.attributes.tolist() == [ids("red"), ids("blue"), ids("green")]


def test_region_negatives_give_a_named_object_an_attribute_its_caption_does_not_name():
    _, words, input_ids, attention_mask, regions = _region_setup()
    row_1_donors = set()
    for seed in range(20):
        slots, features, boxes, has = region_binding_negatives(
            input_ids, attention_mask, regions, words, torch.Generator().manual_seed(seed)
        )
        # row 0: only the car can change (a red dog would carry a word the caption names), both its regions,
        # each to the green car of row 1; row 1: its green car becomes a red one (row 0's car or its
        # duplicate); row 2 names no attribute, so nothing can change
        assert has.tolist() == [True, True, False]
        assert slots.int().tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
        assert features[0, :2].tolist() == [[4.0, 4.0]] * 2
        row_1_donors.add(float(features[1, 0, 0]))
        assert torch.allclose(boxes[slots], features[slots][:, :1].expand(-1, 4) / 10)  # with its own box
    assert row_1_donors == {1.0, 2.0}  # either red car, drawn uniformly


def test_a_region_negative_keeps_its_caption_and_survives_mlm():
    tokenizer, words, input_ids, attention_mask, regions = _region_setup()
    settings = PieceSettings(
        mask_token_id=tokenizer.mask_token_id,
        vocab_size=len(tokenizer),
        special_ids=torch.tensor(sorted(tokenizer.all_special_ids)),
        mlm_probability=0.3,
        region_words=words,
    )
    batch = _batch_with_regions(settings, input_ids, attention_mask, regions)
    PRETRAINING_TASKS["itm_vsc"].piece(batch)
    PRETRAINING_TASKS["mlm"].piece(batch)
    labels = batch.labels
    assert torch.equal(labels["binding_input_ids"], batch.inputs["input_ids"])  # the caption, masked alike
    assert labels["binding_mask"].tolist() == [True, True, False]  # kept although no word differs
    assert labels["binding_region_slots"].int().tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]


def test_rows_that_allow_both_kinds_get_a_text_or_a_region_negative():
    tokenizer, _, input_ids, attention_mask, regions = _region_setup()
    settings = PieceSettings(
        mask_token_id=tokenizer.mask_token_id,
        vocab_size=len(tokenizer),
        special_ids=torch.tensor(sorted(tokenizer.all_special_ids)),
        binding_words=binding_words(["car", "dog"], ["red", "blue", "green"], tokenizer),
        region_words=region_words(["car", "dog", "hot dog"], ["red", "blue", "green"], tokenizer),
    )
    kinds = set()
    for seed in range(20):
        batch = _batch_with_regions(settings, input_ids, attention_mask, regions, seed)
        PRETRAINING_TASKS["itm_vsc"].piece(batch)
        labels = batch.labels
        text_changed = (labels["binding_input_ids"][0] != input_ids[0]).any()
        region_changed = labels["binding_region_slots"][0].any()
        assert bool(text_changed) != bool(region_changed)  # row 0: exactly one of the two
        kinds.add("text" if text_changed else "region")
        assert labels["binding_mask"].tolist() == [True, True, False]
    assert kinds == {"text", "region"}


def test_itm_vsc_scores_a_caption_with_its_image_changed_as_a_mismatch():
    config = tiny_config(pretraining_tasks=ALIGNMENT_TASKS)
    torch.manual_seed(0)
    model = LxmertSForPreTraining(config).eval()
    inputs = random_inputs(config)
    labels = alignment_labels(inputs)
    has = torch.tensor([True, True, False])
    slots = torch.zeros(inputs["visual_attention_mask"].shape, dtype=torch.bool)
    slots[0, 1], slots[1, :2] = True, True
    generator = torch.Generator().manual_seed(2)
    donors = torch.randn(inputs["visual_feats"].shape, generator=generator)
    boxes = torch.rand(inputs["visual_pos"].shape, generator=generator)
    region = {
        "binding_input_ids": inputs["input_ids"],
        "binding_mask": has,
        "binding_region_slots": slots,
        "binding_region_features": donors,
        "binding_region_boxes": boxes,
    }
    features, unchanged = {}, {}
    binding_pass = model._binding_pass
    with torch.no_grad():
        model._binding_pass = _recording(binding_pass, unchanged)
        model(**inputs, **labels, **{**region, "binding_region_slots": slots & False})
        model._binding_pass = _recording(binding_pass, features)
        model(**inputs, **labels, **region)
    changed_feats = torch.where(slots[:, :, None], donors, inputs["visual_feats"])
    changed_boxes = torch.where(slots[:, :, None], boxes, inputs["visual_pos"])
    direct = model.lxmert(
        **{
            name: value[has]
            for name, value in inputs.items()
            if name in ("input_ids", "attention_mask", "token_type_ids", "position_ids")
        },
        visual_feats=changed_feats[has],
        visual_pos=changed_boxes[has],
        visual_attention_mask=inputs["visual_attention_mask"][has],
    )
    assert torch.allclose(features["binding"].pooled_output, direct.pooled_output, atol=1e-6)
    assert torch.allclose(features["binding"].language_output, direct.language_output, atol=1e-5)
    # without slots the pair is the caption with its own image: not what the changed image gives
    assert not torch.allclose(unchanged["binding"].language_output, direct.language_output, atol=1e-3)


def test_region_negatives_labels_are_checked():
    config = tiny_config(pretraining_tasks=ALIGNMENT_TASKS)
    model = LxmertSForPreTraining(config)
    inputs = random_inputs(config)
    labels = alignment_labels(inputs)
    region = {
        "binding_region_slots": torch.zeros(inputs["visual_attention_mask"].shape, dtype=torch.bool),
        "binding_region_features": torch.zeros(inputs["visual_feats"].shape),
        "binding_region_boxes": torch.zeros(inputs["visual_pos"].shape),
    }
    text = {"binding_input_ids": inputs["input_ids"], "binding_mask": torch.ones(3, dtype=torch.bool)}
    with pytest.raises(ValueError, match="give all three or none"):
        model(**inputs, **labels, **text, binding_region_slots=region["binding_region_slots"])
    with pytest.raises(ValueError, match="binding_region_slots: .*give binding_input_ids"):
        model(**inputs, **labels, **region)
    for name in ("binding_region_features", "binding_region_boxes"):
        with pytest.raises(ValueError, match=name):
            model(**inputs, **labels, **text, **{**region, name: region[name][..., :-1]})


def test_relation_words_are_the_one_piece_spatial_words():
    tokenizer = wordpiece_tokenizer_from_vocabulary([*WORDS, "above", "be", "##hind"])
    ids = relation_word_ids(tokenizer)
    assert sorted(tokenizer.convert_ids_to_tokens(ids.tolist())) == ["above", "left", "right"]  # not "behind"


def test_mlm_masks_relation_words_at_their_own_rate_beside_class_words():
    tokenizer = wordpiece_tokenizer_from_vocabulary(WORDS)
    input_ids, attention_mask = _encode(tokenizer, ["a red car left of a blue dog ."] * 2000)
    ids = tokenizer.convert_tokens_to_ids
    settings = PieceSettings(
        mask_token_id=tokenizer.mask_token_id,
        vocab_size=len(tokenizer),
        special_ids=torch.tensor(sorted(tokenizer.all_special_ids)),
        class_word_ids=torch.tensor([ids("red"), ids("car")]),
        class_word_mlm_probability=0.3,
        relation_word_ids=relation_word_ids(tokenizer),
        relation_word_mlm_probability=0.6,
    )
    batch = _batch_with_regions(settings, input_ids, attention_mask, regions={})
    PRETRAINING_TASKS["mlm"].piece(batch)
    chosen = batch.labels["mlm_labels"] != -100
    for words, rate in ((["left"], 0.6), (["red", "car"], 0.3), (["a", "of", "blue", "dog", "."], 0.15)):
        where = torch.isin(input_ids, torch.tensor([ids(word) for word in words]))
        assert within_binomial(int(chosen[where].sum()), int(where.sum()), rate), words


def test_relation_word_mlm_needs_mlm(store):  # noqa: F811 (a fixture)
    processor = LxmertSProcessor(wordpiece_tokenizer_from_vocabulary(WORDS), num_regions=6, max_length=12)
    with pytest.raises(ValueError, match="relation_word_mlm_probability: .*needs 'mlm' in tasks"):
        MSPCollator(store, processor, ["itm"], relation_word_mlm_probability=0.5)


def _subject_words(tokenizer):
    ids = tokenizer.convert_tokens_to_ids
    concepts = torch.tensor([ids(word) for word in ("red", "blue", "green", "car", "dog")])
    return relation_word_ids(tokenizer), concepts


def _marks(tokenizer, input_ids, always, never):
    """Each real token with M (always masked), K (never) or - (left to the rates)."""
    tokens = tokenizer.convert_ids_to_tokens(input_ids.tolist())
    return [
        (token, "M" if hidden else "K" if kept else "-")
        for token, hidden, kept in zip(tokens, always.tolist(), never.tolist(), strict=True)
        if token != "[PAD]"
    ]


def test_relation_subjects_hide_the_words_naming_a_relations_subject_and_keep_its_relation_and_object():
    tokenizer = wordpiece_tokenizer_from_vocabulary(WORDS)
    relations, concepts = _subject_words(tokenizer)
    texts = ["a blue red car left of a green dog .", "car right of dog . dog left of red car", "two dogs ."]
    input_ids, attention_mask = _encode(tokenizer, texts)
    always, never = relation_subjects(
        input_ids, attention_mask, relations, concepts, torch.Generator().manual_seed(0), 1.0
    )
    assert _marks(tokenizer, input_ids[0], always[0], never[0]) == [
        ("[CLS]", "-"), ("a", "-"), ("blue", "M"), ("red", "M"), ("car", "M"), ("left", "K"), ("of", "K"),
        ("a", "K"), ("green", "K"), ("dog", "K"), (".", "K"), ("[SEP]", "K"),
    ]  # fmt: skip
    # two relations: the second's subject is the first's object, hidden all the same
    assert _marks(tokenizer, input_ids[1], always[1], never[1]) == [
        ("[CLS]", "-"), ("car", "M"), ("right", "K"), ("of", "K"), ("dog", "K"), (".", "K"), ("dog", "M"),
        ("left", "K"), ("of", "K"), ("red", "K"), ("car", "K"), ("[SEP]", "K"),
    ]  # fmt: skip
    assert not always[2].any() and not never[2].any()  # no relation word
    none = relation_subjects(input_ids, attention_mask, relations, concepts, torch.Generator(), 0.0)
    assert not none[0].any() and not none[1].any()


def test_a_relation_subject_is_at_most_longest_words_and_needs_a_concept_word_before_the_relation():
    tokenizer = wordpiece_tokenizer_from_vocabulary(WORDS)
    relations, concepts = _subject_words(tokenizer)
    input_ids, attention_mask = _encode(tokenizer, ["red blue green car left of dog", "a left of dog"])
    always, never = relation_subjects(
        input_ids, attention_mask, relations, concepts, torch.Generator(), 1.0, longest=2
    )
    tokens = tokenizer.convert_ids_to_tokens
    hidden = [tokens(ids[rows].tolist()) for ids, rows in zip(input_ids, always, strict=True)]
    assert hidden == [["green", "car"], []]
    assert not never[1].any()  # nothing hidden: nothing to keep


def test_relation_subjects_draw_each_relation_word_at_the_rate():
    tokenizer = wordpiece_tokenizer_from_vocabulary(WORDS)
    relations, concepts = _subject_words(tokenizer)
    input_ids, attention_mask = _encode(tokenizer, ["red car left of dog"] * 2000)
    always, never = relation_subjects(
        input_ids, attention_mask, relations, concepts, torch.Generator().manual_seed(0), 0.3
    )
    drawn = always.any(1)
    assert within_binomial(int(drawn.sum()), len(drawn), 0.3)
    assert (always.sum(1) == 2 * drawn).all() and (never.any(1) == drawn).all()


def test_mask_tokens_always_and_never_overrule_the_rates():
    input_ids = torch.arange(3, 23).repeat(200, 1)
    always = torch.zeros_like(input_ids, dtype=torch.bool)
    always[:, 2] = True
    never = torch.zeros_like(always)
    never[:, 5:] = True
    masked, labels = mask_tokens(
        input_ids,
        torch.ones_like(input_ids),
        mask_token_id=1,
        vocab_size=30,
        special_ids=SPECIAL,
        generator=torch.Generator().manual_seed(0),
        probability=0.5,
        always=always,
        never=never,
    )
    chosen = labels != -100
    assert chosen[:, 2].all() and not chosen[:, 5:].any()
    assert within_binomial(int(chosen[:, [0, 1, 3, 4]].sum()), 800, 0.5)
    assert within_binomial(int((masked[:, 2] == 1).sum()), 200, 0.8)  # BERT's 80 / 10 / 10 still applies


def test_mlm_hides_relation_subjects_whole_and_never_their_relation_word():
    tokenizer = wordpiece_tokenizer_from_vocabulary(WORDS)
    relations, concepts = _subject_words(tokenizer)
    input_ids, attention_mask = _encode(tokenizer, ["a red car left of a blue dog ."] * 1000)
    settings = PieceSettings(
        mask_token_id=tokenizer.mask_token_id,
        vocab_size=len(tokenizer),
        special_ids=torch.tensor(sorted(tokenizer.all_special_ids)),
        mlm_probability=0.0,  # only the subjects: what MLM chooses is what relation_subjects drew
        class_word_ids=concepts,
        relation_word_ids=relations,
        relation_subject_mlm_probability=0.5,
    )
    batch = _batch_with_regions(settings, input_ids, attention_mask, regions={})
    PRETRAINING_TASKS["mlm"].piece(batch)
    chosen = batch.labels["mlm_labels"] != -100
    subject = torch.isin(input_ids[0], torch.tensor(tokenizer.convert_tokens_to_ids(["red", "car"])))
    hidden = chosen[:, subject].all(1)
    assert within_binomial(int(hidden.sum()), 1000, 0.5)
    assert (chosen[:, subject].any(1) == hidden).all() and not chosen[:, ~subject].any()
    assert (batch.inputs["input_ids"][hidden][:, subject] != input_ids[hidden][:, subject]).any()


def test_relation_subject_mlm_needs_mlm_and_the_object_names(store):  # noqa: F811 (a fixture)
    processor = LxmertSProcessor(wordpiece_tokenizer_from_vocabulary(WORDS), num_regions=6, max_length=12)
    for tasks, vocab in ((["itm"], OBJECT_VOCAB), (["mlm"], None)):
        with pytest.raises(ValueError, match="relation_subject_mlm_probability: .*needs 'mlm' in tasks"):
            MSPCollator(store, processor, tasks, object_vocab=vocab, relation_subject_mlm_probability=0.5)
