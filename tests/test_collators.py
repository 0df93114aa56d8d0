import logging
import math

import datasets
import numpy as np
import pytest
import torch
from model_inputs import tiny_config

from lxmert_s_msp.data.collators import (
    EPOCH_FIELD,
    INDEX_FIELD,
    MSPCollator,
    class_word_ids,
    class_wordpieces,
    count_truncated,
    tokenize_corpus,
)
from lxmert_s_msp.data.hard_negatives import load_hard_negatives
from lxmert_s_msp.data.store import HARD_NEGATIVES_FILE, write_store
from lxmert_s_msp.data.tokenizer import wordpiece_tokenizer_from_vocabulary
from modeling_lxmert_s import LxmertSModel
from modeling_lxmert_s.pretraining_pieces import (
    NON_IDENTITY_PERMUTATIONS,
    mask_regions,
    mask_tokens,
    mismatch_images,
    shuffle_triplets,
    topic_targets,
)
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor

WORDS = ["a", "man", "on", "the", "street", "with", "hot", "dog", "car", "tree", "red", "and", "blue", "sky"]
OBJECT_VOCAB = ["man", "dog", "car,cars", "hot dog", "tree"]
# Detector classes per region of the 6 store images; regions past NUM_BOXES are padding (class 0, "man").
OBJECT_IDS = np.array(
    [
        [0, 4, 3, 3, 1, 2],
        [4, 4, 4, 4, 4, 4],
        [2, 0, 1, 1, 1, 0],
        [1, 4, 4, 4, 0, 0],
        [3, 3, 2, 2, 0, 1],
        [2, 2, 2, 0, 0, 0],
    ]
)
NUM_BOXES = np.array([6, 6, 5, 4, 6, 3])
NUM_IMAGES, NUM_REGIONS, FEATURE_DIM = OBJECT_IDS.shape + (8,)
TEXTS = [
    "a man on the street with a hot dog",
    "a man and a dog",
    "red car",
    "blue sky",
    "a tree",
    "a dog and a car",
]
SENTENCE_STAGE = ["mlm", "mrfr", "moc", "itm", "tits"]
ATTRIBUTE_VOCAB = ["red", "blue"]


def within_binomial(count: int, trials: int, probability: float, sigmas: float = 4.0) -> bool:
    """`count` successes of `trials` lie within `sigmas` binomial standard deviations of the mean."""
    return abs(count - trials * probability) <= sigmas * math.sqrt(trials * probability * (1 - probability))


def region_codes(num_images: int, num_regions: int, feature_dim: int) -> np.ndarray:
    """Features whose dims 0 and 1 spell (image + 1, region + 1), so any feature says where it came from."""
    features = np.zeros((num_images, num_regions, feature_dim), np.float32)
    features[..., 0] = np.arange(1, num_images + 1)[:, None]
    features[..., 1] = np.arange(1, num_regions + 1)[None, :]
    features[..., 2:] = 0.5
    return features


@pytest.fixture
def processor() -> LxmertSProcessor:
    return LxmertSProcessor(
        wordpiece_tokenizer_from_vocabulary(WORDS), num_regions=NUM_REGIONS, max_length=12
    )


@pytest.fixture
def store(tmp_path):
    valid = np.arange(NUM_REGIONS)[None, :] < NUM_BOXES[:, None]
    boxes = np.zeros((NUM_IMAGES, NUM_REGIONS, 4), np.float32)
    boxes[..., 0] = np.arange(NUM_REGIONS)[None, :] / 8
    boxes[..., 2] = 0.9
    boxes[..., 3] = np.arange(NUM_IMAGES)[:, None] / 8 + 0.1
    confidences = np.where(valid, 0.5 + np.arange(NUM_REGIONS) / 20, 0).astype(np.float32)
    return write_store(
        tmp_path / "store",
        [f"img{index}" for index in range(NUM_IMAGES)],
        features=region_codes(NUM_IMAGES, NUM_REGIONS, FEATURE_DIM) * valid[..., None],
        boxes=boxes * valid[..., None],
        object_ids=OBJECT_IDS * valid,
        object_confidences=confidences,
        attribute_ids=(OBJECT_IDS + 1) * valid,
        attribute_confidences=confidences / 2,
        num_boxes=NUM_BOXES,
        image_sizes=np.tile([480, 640], (NUM_IMAGES, 1)),
    )


def corpus_rows(indices=range(NUM_IMAGES), epoch: int = 0) -> list[dict]:
    """Rows as training hands them to the collator: with the epoch and dataset index that seed the batch."""
    return [
        {"image_id": f"img{index}", "image_index": index, "text": TEXTS[index], **seeding(epoch, index)}
        for index in indices
    ]


def seeding(epoch: int, index: int) -> dict[str, int]:
    return {EPOCH_FIELD: epoch, INDEX_FIELD: index}


def fed_images(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Store row of the image each example was fed, read back from its unshuffled region targets."""
    return batch["mrfr_labels"][:, 0, 0].long() - 1


# ---------------------------------------------------------------- pieces


def test_mask_tokens_labels_every_text_token_and_nothing_else_at_probability_one():
    special_ids = torch.tensor([0, 1, 2, 3, 4])
    input_ids = torch.tensor([[2, 7, 8, 9, 3, 0, 0], [2, 1, 5, 6, 5, 6, 3]])
    attention_mask = (input_ids != 0).long()

    masked, labels = mask_tokens(
        input_ids,
        attention_mask,
        mask_token_id=4,
        vocab_size=10,
        special_ids=special_ids,
        generator=torch.Generator().manual_seed(0),
        probability=1.0,
    )

    assert labels.tolist() == [[-100, 7, 8, 9, -100, -100, -100], [-100, -100, 5, 6, 5, 6, -100]]
    # [CLS], [SEP], [UNK] and padding come through untouched
    untouched = labels == -100
    assert torch.equal(masked[untouched], input_ids[untouched])


def test_mask_tokens_rate_and_80_10_10_split():
    batch, length, vocab_size = 3000, 20, 50
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, vocab_size, (batch, length), generator=generator)
    input_ids[:, 0], input_ids[:, -3] = 2, 3
    input_ids[:, -2:] = 0
    attention_mask = (input_ids != 0).long()

    masked, labels = mask_tokens(
        input_ids,
        attention_mask,
        mask_token_id=4,
        vocab_size=vocab_size,
        special_ids=torch.tensor([0, 1, 2, 3, 4]),
        generator=generator,
    )

    chosen = labels != -100
    eligible = batch * (length - 4)
    assert within_binomial(int(chosen.sum()), eligible, 0.15)
    assert not chosen[:, [0, -3, -2, -1]].any()
    assert torch.equal(labels[chosen], input_ids[chosen])
    assert torch.equal(masked[~chosen], input_ids[~chosen])
    num_chosen = int(chosen.sum())
    # a random replacement lands on [MASK] or on the original id with probability 1 / vocab_size each
    assert within_binomial(int((masked[chosen] == 4).sum()), num_chosen, 0.8 + 0.1 / vocab_size)
    assert within_binomial(
        int((masked[chosen] == input_ids[chosen]).sum()), num_chosen, 0.1 + 0.1 / vocab_size
    )


def test_mask_regions_rate_split_and_donors_from_other_images():
    batch, num_regions = 1500, 36
    generator = torch.Generator().manual_seed(2)
    features = torch.from_numpy(region_codes(batch, num_regions, 3))
    num_boxes = torch.randint(10, num_regions + 1, (batch,), generator=generator)
    valid = torch.arange(num_regions)[None, :] < num_boxes[:, None]

    masked = features.clone()
    region_mask = mask_regions(masked, valid.long(), generator)

    assert not region_mask[~valid].any()
    assert torch.equal(masked[~region_mask], features[~region_mask])
    assert within_binomial(int(region_mask.sum()), int(valid.sum()), 0.15)
    chosen_features, chosen_originals = masked[region_mask], features[region_mask]
    zeroed = chosen_features.eq(0).all(dim=-1)
    kept = chosen_features.eq(chosen_originals).all(dim=-1)
    replaced = ~zeroed & ~kept
    num_chosen = len(chosen_features)
    assert within_binomial(int(zeroed.sum()), num_chosen, 0.8)
    assert within_binomial(int(kept.sum()), num_chosen, 0.1)
    donor_image = chosen_features[replaced, 0].long() - 1
    donor_region = chosen_features[replaced, 1].long() - 1
    own_image = torch.nonzero(region_mask)[:, 0][replaced]
    assert (donor_image != own_image).all()
    assert (donor_region < num_boxes[donor_image]).all()
    # donors are spread over the batch, not a fixed neighbour
    assert len(((donor_image - own_image) % batch).unique()) > len(donor_image) // 2


def test_shuffle_triplets_permutes_every_whole_valid_triplet_at_probability_one():
    features = torch.from_numpy(region_codes(2, 8, 3))
    # image 0: triplets (0,1,2) and (3,4,5) valid; regions 6, 7 are outside any triplet.
    # image 1: 5 valid regions, so only (0,1,2) is whole.
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])

    shuffled = features.clone()
    ifrs_mask = shuffle_triplets(shuffled, mask, torch.Generator().manual_seed(3), probability=1.0)

    assert ifrs_mask.tolist() == [[True] * 6 + [False] * 2, [True] * 3 + [False] * 5]
    source_region = shuffled[..., 1].long() - 1
    for image, triplets in ((0, [0, 3]), (1, [0])):
        for start in triplets:
            order = source_region[image, start : start + 3].tolist()
            assert sorted(order) == [start, start + 1, start + 2] and order != sorted(order)
    assert torch.equal(source_region[~ifrs_mask], torch.arange(8).expand(2, 8)[~ifrs_mask])
    assert (shuffled[..., 0].long() - 1).eq(torch.tensor([[0], [1]])).all()


def test_shuffle_triplets_rate_and_all_five_orders():
    batch, num_regions = 4000, 36
    generator = torch.Generator().manual_seed(4)
    features = torch.from_numpy(region_codes(batch, num_regions, 2))
    mask = torch.ones(batch, num_regions, dtype=torch.long)

    shuffled = features.clone()
    ifrs_mask = shuffle_triplets(shuffled, mask, generator)

    shuffled_triplets = ifrs_mask.view(batch, 12, 3)[..., 0]
    assert within_binomial(int(shuffled_triplets.sum()), batch * 12, 0.05)
    orders = (shuffled[..., 1].long() - 1).view(batch, 12, 3)[shuffled_triplets]
    orders = orders - orders.min(dim=1, keepdim=True).values
    seen, counts = orders.unique(dim=0, return_counts=True)
    assert torch.equal(seen, NON_IDENTITY_PERMUTATIONS.unique(dim=0))
    assert all(within_binomial(int(count), len(orders), 0.2) for count in counts)


def test_class_wordpieces_take_the_first_synonym_and_drop_unknown_words(processor):
    table = class_wordpieces([*OBJECT_VOCAB, "unicorn"], processor.tokenizer)

    assert table.shape == (6, 2)
    tokens = [processor.tokenizer.convert_ids_to_tokens([i for i in row if i >= 0]) for row in table.tolist()]
    assert tokens == [["man"], ["dog"], ["car"], ["hot", "dog"], ["tree"], []]


def test_topic_targets_are_text_tokens_that_name_a_detected_object(processor):
    tokenizer = processor.tokenizer
    encoded = processor.encode_text(["a man on the street with a hot dog", "a man and a dog", "red car"])
    ids = tokenizer.convert_tokens_to_ids
    object_ids = torch.from_numpy(OBJECT_IDS[[0, 3, 1]])
    valid = torch.arange(NUM_REGIONS)[None, :] < torch.from_numpy(NUM_BOXES[[0, 3, 1]])[:, None]

    targets = topic_targets(
        torch.from_numpy(encoded["input_ids"]),
        torch.from_numpy(encoded["attention_mask"]),
        object_ids,
        valid,
        class_wordpieces(OBJECT_VOCAB, tokenizer),
        len(tokenizer),
        torch.tensor(tokenizer.all_special_ids),
    )

    assert targets.shape == (3, len(tokenizer)) and targets.dtype == torch.float32
    # image 3 shows a dog and trees; its padding regions (class "man") must not count
    expected = [{ids("man"), ids("hot"), ids("dog")}, {ids("dog")}, set()]
    assert [set(torch.nonzero(row).flatten().tolist()) for row in targets] == expected


def test_mismatch_images_rate_and_uniform_other_images():
    image_index = torch.arange(2000) % 10
    fed, labels = mismatch_images(image_index, torch.arange(10), torch.Generator().manual_seed(5))

    assert within_binomial(int((labels == 0).sum()), 2000, 0.5)
    assert torch.equal(fed == image_index, labels == 1)
    others = fed[labels == 0]
    assert others.unique().tolist() == list(range(10))


def test_mismatch_images_draw_only_from_the_pool():
    pool = torch.tensor([1, 4, 6, 9])
    image_index = torch.tensor([4, 9, 2]).repeat(1000)  # 2 is not in the pool

    fed, labels = mismatch_images(image_index, pool, torch.Generator().manual_seed(7), probability=1.0)

    assert (labels == 0).all()
    for image, others in ((4, [1, 6, 9]), (9, [1, 4, 6]), (2, [1, 4, 6, 9])):
        drawn = fed[image_index == image]
        values, counts = drawn.unique(return_counts=True)
        assert values.tolist() == others, image
        assert all(within_binomial(int(count), len(drawn), 1 / len(others)) for count in counts)


def test_mismatch_images_draw_from_hard_negatives_when_there_are_some():
    hard_negatives = np.array([[3, 4, -1], [-1, -1, -1], [0, -1, -1], [2, 1, 0], [0, 1, 2]])
    image_index = torch.arange(5).repeat(400)

    fed, labels = mismatch_images(
        image_index, torch.arange(5), torch.Generator().manual_seed(6), hard_negatives
    )

    mismatched = labels == 0
    for image, pool in ((0, {3, 4}), (2, {0}), (3, {0, 1, 2}), (1, {0, 2, 3, 4})):
        drawn = set(fed[mismatched & (image_index == image)].tolist())
        assert drawn == pool, image


def test_mask_tokens_chooses_preferred_ids_at_their_own_rate():
    batch, length, vocab_size = 3000, 20, 50
    generator = torch.Generator().manual_seed(8)
    input_ids = torch.randint(5, vocab_size, (batch, length), generator=generator)
    preferred_ids = torch.arange(5, 15)

    _, labels = mask_tokens(
        input_ids,
        torch.ones_like(input_ids),
        mask_token_id=4,
        vocab_size=vocab_size,
        special_ids=torch.tensor([0, 1, 2, 3, 4]),
        generator=generator,
        preferred=[(preferred_ids, 0.4), (torch.arange(40, 45), 0.7)],
    )

    chosen, preferred = labels != -100, torch.isin(input_ids, preferred_ids)
    second = torch.isin(input_ids, torch.arange(40, 45))
    assert within_binomial(int(chosen[preferred].sum()), int(preferred.sum()), 0.4)
    assert within_binomial(int(chosen[second].sum()), int(second.sum()), 0.7)
    others = ~preferred & ~second
    assert within_binomial(int(chosen[others].sum()), int(others.sum()), 0.15)


def test_class_word_ids_are_the_one_piece_one_word_class_names():
    tokenizer = wordpiece_tokenizer_from_vocabulary([*WORDS, "bi", "##ke"])
    names = ["man", "hot dog", "car,cars", "bike", "unicorn", "red and blue", "dog", *ATTRIBUTE_VOCAB]
    ids = class_word_ids(names, tokenizer)
    # the words of "hot dog" and "red and blue" are no names ("and" no category); "dog" is one of its own;
    # "cars" and "unicorn" are unknown words ([UNK]) and "bike" two pieces
    assert sorted(tokenizer.convert_ids_to_tokens(ids.tolist())) == ["blue", "car", "dog", "man", "red"]


# ---------------------------------------------------------------- stage collator


def test_stage_collators_produce_exactly_their_inputs_and_labels(store, processor):
    inputs = set(processor.model_input_names)
    region = {"region_mask", "mrfr_labels"} | {
        f"moc_{kind}_{part}" for kind in ("object", "attribute") for part in ("labels", "confidences")
    }
    stages = {
        ("mlm", "mrfr", "moc", "ifrs"): {"mlm_labels", "ifrs_labels", "ifrs_mask"} | region,
        ("mlm", "mrfr", "moc", "titp"): {"mlm_labels", "titp_labels"} | region,
        tuple(SENTENCE_STAGE): {"mlm_labels", "itm_labels", "tits_labels"} | region,
    }
    for tasks, labels in stages.items():
        batch = MSPCollator(store, processor, tasks, object_vocab=OBJECT_VOCAB)(corpus_rows())

        assert set(batch) == inputs | labels, tasks
        assert batch["visual_feats"].dtype == torch.float32 and batch["visual_feats"].shape == (6, 6, 8)
        fed_boxes = torch.from_numpy(NUM_BOXES)[fed_images(batch)]
        assert torch.equal(
            batch["visual_attention_mask"], (torch.arange(6)[None] < fed_boxes[:, None]).long()
        )
        assert not batch["region_mask"][batch["visual_attention_mask"] == 0].any()


def test_a_batch_is_a_function_of_the_seed_and_its_rows_epochs_and_indices(store, processor):
    tasks = SENTENCE_STAGE + ["ifrs"]
    first = MSPCollator(store, processor, tasks, object_vocab=OBJECT_VOCAB, seed=7)
    second = MSPCollator(store, processor, tasks, object_vocab=OBJECT_VOCAB, seed=7)
    rows = corpus_rows() * 4
    batch = first(rows)
    first(corpus_rows(epoch=1) * 4)  # calls in between change nothing: no call counter

    for again in (first(rows), second(rows)):
        assert batch.keys() == again.keys()
        assert all(torch.equal(batch[name], again[name]) for name in batch)
    # another epoch of the same examples, or the same texts at other dataset indices, draw anew
    for other in (corpus_rows(epoch=1) * 4, [row | {INDEX_FIELD: 100 + n} for n, row in enumerate(rows)]):
        assert not torch.equal(batch["mlm_labels"], first(other)["mlm_labels"])
    other_seed = MSPCollator(store, processor, tasks, object_vocab=OBJECT_VOCAB, seed=8)(rows)
    assert not torch.equal(batch["mlm_labels"], other_seed["mlm_labels"])
    # a seed passed to the call replaces the rows' epochs and indices
    assert all(torch.equal(first(rows, seed=3)[name], second(rows * 1, seed=3)[name]) for name in batch)


def test_rows_without_their_epoch_and_index_need_a_seed(store, processor):
    collator = MSPCollator(store, processor, ["mlm"])
    plain = [{"image_id": "img0", "image_index": 0, "text": TEXTS[0]}]
    with pytest.raises(
        KeyError, match=r"rows\[0\] \(image_id 'img0'\): fields 'epoch' and 'sample_index' are"
    ):
        collator(plain)
    assert torch.equal(collator(plain, seed=1)["mlm_labels"], collator(plain, seed=1)["mlm_labels"])


def test_mismatched_pairs_get_the_fed_images_region_and_topic_targets(store, processor):
    collator = MSPCollator(store, processor, SENTENCE_STAGE, object_vocab=OBJECT_VOCAB)
    rows = corpus_rows() * 5

    batch = collator(rows)

    fed = fed_images(batch)
    own = torch.tensor([row["image_index"] for row in rows])
    assert torch.equal(batch["itm_labels"], (fed == own).long())
    assert 0 < int(batch["itm_labels"].sum()) < len(rows)
    assert torch.equal(batch["moc_object_labels"], torch.from_numpy(store.object_ids[fed.numpy()]))
    assert torch.equal(
        batch["moc_attribute_confidences"], torch.from_numpy(store.attribute_confidences[fed.numpy()])
    )
    assert torch.equal(batch["mrfr_labels"], torch.from_numpy(store.features[fed.numpy()].astype(np.float32)))
    # topic: the text's tokens that name an object of the image actually fed
    tokenizer = processor.tokenizer
    table = class_wordpieces(OBJECT_VOCAB, tokenizer)
    unmasked = processor.encode_text([row["text"] for row in rows])["input_ids"]
    for example, image in enumerate(fed.tolist()):
        shown = {
            piece
            for cls in OBJECT_IDS[image, : NUM_BOXES[image]]
            for piece in table[cls].tolist()
            if piece >= 0
        }
        expected = shown & set(unmasked[example].tolist())
        assert set(torch.nonzero(batch["tits_labels"][example]).flatten().tolist()) == expected


def test_vsc_gets_the_fed_regions_before_mrfr_and_ifrs_corrupted_them(store, processor):
    collator = MSPCollator(
        store,
        processor,
        ["itm", "mrfr", "ifrs", "vsc"],
        region_mask_probability=0.5,
        triplet_shuffle_probability=0.5,
    )

    batch = collator(corpus_rows() * 5)

    fed = fed_images(batch)
    assert torch.equal(batch["image_ids"], fed)
    clean = torch.from_numpy(store.features[fed.numpy()].astype(np.float32))
    assert torch.equal(batch["vsc_visual_feats"], clean)
    # what the encoder is fed differs at masked or shuffled slots only, and at some of them
    corrupted = (batch["visual_feats"] != clean).any(-1)
    touched = batch["region_mask"].bool() | batch["ifrs_mask"].bool()
    assert corrupted.any() and not corrupted[~touched].any()


def test_hard_negative_file_feeds_itm_hs(store, processor):
    hard = np.full((NUM_IMAGES, 2), -1, dtype=np.int64)
    hard[0] = [5, 4]
    hard[1] = [3, -1]
    np.save(store.path / HARD_NEGATIVES_FILE, hard)
    collator = MSPCollator(
        store,
        processor,
        ["itm_hs", "mrfr"],
        hard_negatives=load_hard_negatives(store.path),
        mismatch_probability=1.0,
    )
    rows = corpus_rows([0, 1, 2]) * 30

    fed = fed_images(collator(rows))

    assert set(fed[0::3].tolist()) == {5, 4}
    assert set(fed[1::3].tolist()) == {3}
    assert 2 not in fed[2::3].tolist() and len(set(fed[2::3].tolist())) > 1
    # plain ITM ignores the file: random negatives
    random = MSPCollator(store, processor, ["itm", "mrfr"], mismatch_probability=1.0)
    assert len(set(fed_images(random(rows))[0::3].tolist())) == NUM_IMAGES - 1


def test_negatives_are_only_the_corpus_images(store, processor):
    hard = np.tile(np.array([5, 4, 3, 2, 1, 0]), (NUM_IMAGES, 1))  # every image's hard list starts with 5
    corpus = [0, 1, 2, 3]  # images 4 and 5 are held out
    rows = corpus_rows(corpus) * 50
    for tasks, hard_negatives in ((["itm", "mrfr"], None), (["itm_hs", "mrfr"], hard)):
        collator = MSPCollator(
            store,
            processor,
            tasks,
            hard_negatives=hard_negatives,
            negative_images=corpus,
            mismatch_probability=1.0,
        )
        fed = fed_images(collator(rows))
        assert set(fed.tolist()) <= set(corpus), tasks
    # the hard list's first held-out-free member is 3 for images 0-2, and 2 for image 3
    assert set(fed.view(50, 4)[:, :3].flatten().tolist()) <= {3, 2, 1, 0}


def test_ifrs_shuffles_features_only_and_region_targets_describe_each_slots_own_region(store, processor):
    collator = MSPCollator(store, processor, ["ifrs", "mrfr", "moc"], triplet_shuffle_probability=1.0)

    batch = collator(corpus_rows())

    original = torch.from_numpy(store.features[:].astype(np.float32))
    whole_triplets = torch.from_numpy(NUM_BOXES[:, None] >= np.array([3, 6])[None, :]).repeat_interleave(
        3, dim=1
    )
    assert torch.equal(batch["ifrs_mask"], whole_triplets)
    # boxes stay in their slots; the features of each shuffled triplet are its own three, reordered
    assert torch.equal(batch["visual_pos"], torch.from_numpy(np.array(store.boxes)).float())
    unmasked = ~batch["region_mask"]
    source = batch["visual_feats"][..., 1].long() - 1
    triplets = source.view(6, 2, 3)[(whole_triplets & unmasked).view(6, 2, 3).all(-1)]
    in_order = triplets.min(dim=1, keepdim=True).values + torch.arange(3)
    assert torch.equal(triplets.sort(dim=1).values, in_order) and (triplets != in_order).any(dim=1).all()
    # IFRS, MRFR and MOC targets at slot p: the original region p, whose box is fed there
    assert torch.equal(batch["ifrs_labels"], original)
    assert torch.equal(batch["mrfr_labels"], original)
    assert torch.equal(batch["moc_object_labels"], torch.from_numpy(np.array(store.object_ids)))


def test_the_encoder_sees_a_shuffle_only_because_the_boxes_stay(store, processor):
    """LXMERT-S has no region-slot embedding: moving the boxes with the features would only permute the
    encoder's outputs, leaving nothing to detect; with the boxes in place the outputs change."""
    batch = MSPCollator(store, processor, ["ifrs"], triplet_shuffle_probability=1.0)(corpus_rows())
    config = tiny_config(visual_feat_dim=FEATURE_DIM, vocab_size=len(processor.tokenizer))
    model = LxmertSModel(config).eval()
    text = {name: batch[name] for name in ("input_ids", "attention_mask", "position_ids")}
    valid = batch["visual_attention_mask"].bool()
    # the slot each fed feature comes from (a padding slot's feature is zero: it stays)
    source = torch.where(valid, batch["visual_feats"][..., 1].long() - 1, torch.arange(NUM_REGIONS))
    images = torch.arange(NUM_IMAGES)[:, None]
    original = batch["ifrs_labels"]
    shuffled_slots = batch["ifrs_mask"]
    assert shuffled_slots.sum() == 27  # every whole triplet of the six images

    def regions(features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            output = model(
                **text,
                visual_feats=features,
                visual_pos=boxes,
                visual_attention_mask=batch["visual_attention_mask"],
            )
        return output.vision_output[:, 1:]  # after the visual [CLS]

    unshuffled = regions(original, batch["visual_pos"])
    # features and boxes moved together: exactly the permuted outputs of the unshuffled image
    both_moved = regions(batch["visual_feats"], batch["visual_pos"][images, source])
    torch.testing.assert_close(both_moved[valid], unshuffled[images, source][valid], rtol=1e-4, atol=1e-5)
    # features moved, boxes kept (the collator's input): each shuffled slot's output is not the output its
    # feature had in its own slot, so the shuffle is visible to the model
    fed = regions(batch["visual_feats"], batch["visual_pos"])
    moved = shuffled_slots & (source != torch.arange(NUM_REGIONS))  # a permutation may keep one in place
    assert moved.sum() > 10
    assert ((fed - unshuffled[images, source]).abs().amax(-1)[moved] > 1e-2).all()


def test_the_phrase_stage_prefers_class_name_words_at_the_configured_rate(store, processor):
    collator = MSPCollator(
        store,
        processor,
        ["mlm"],
        object_vocab=OBJECT_VOCAB,
        attribute_vocab=ATTRIBUTE_VOCAB,
        class_word_mlm_probability=0.6,
    )
    rows = corpus_rows() * 400

    batch = collator(rows, seed=5)

    ids = torch.from_numpy(processor.encode_text([row["text"] for row in rows])["input_ids"])
    tokens = processor.tokenizer.convert_tokens_to_ids
    class_words = torch.tensor([tokens(word) for word in ("man", "dog", "car", "tree", "red", "blue")])
    # "hot" is a word of the name "hot dog", not a name
    other_words = torch.tensor(
        [tokens(word) for word in ("a", "on", "the", "street", "with", "and", "sky", "hot")]
    )
    chosen = batch["mlm_labels"] != -100
    is_class, is_other = torch.isin(ids, class_words), torch.isin(ids, other_words)
    assert within_binomial(int(chosen[is_class].sum()), int(is_class.sum()), 0.6)
    assert within_binomial(int(chosen[is_other].sum()), int(is_other.sum()), 0.15)
    assert not chosen[~is_class & ~is_other].any()  # [CLS], [SEP], padding


def test_texts_longer_than_max_length_are_counted_and_logged(processor, caplog):
    texts = ["a man", "a man on the street with a hot dog and a car and a tree", "red car"]
    with caplog.at_level(logging.WARNING, logger="lxmert_s_msp.data.collators"):
        assert count_truncated(texts, processor, "stage 'token', corpus 'tokens'") == 1
        tokenize_corpus(datasets.Dataset.from_dict({"text": texts}), processor, name="the corpus")
    assert "stage 'token', corpus 'tokens': 1 of 3 texts are longer than max_length 12" in caplog.text
    assert "the corpus: 1 of 3 texts are longer than max_length 12 tokens and are cut" in caplog.text
    assert processor.text_lengths(texts).tolist() == [4, 17, 4]  # [CLS] + 15 words + [SEP]


def test_pretokenised_corpus_collates_like_raw_text_with_one_store_read(
    store, processor, tmp_path, monkeypatch
):
    corpus = datasets.Dataset.from_list(corpus_rows())
    corpus.save_to_disk(tmp_path / "corpus")
    tokenised = tokenize_corpus(datasets.load_from_disk(tmp_path / "corpus"), processor)
    collator = MSPCollator(store, processor, SENTENCE_STAGE, object_vocab=OBJECT_VOCAB)
    reads = []
    read = store.read
    monkeypatch.setattr(store, "read", lambda rows: reads.append(rows) or read(rows))

    from_text = collator(corpus_rows(), seed=11)
    from_tokens = collator(list(tokenised), seed=11)

    assert len(reads) == 2
    assert all(torch.equal(from_text[name], from_tokens[name]) for name in from_text)


@pytest.mark.parametrize(
    ("rows", "error", "message"),
    [
        (
            [{"image_index": 0, "text": "a"}, {"text": "a"}],
            KeyError,
            r"rows\[1\]: field 'image_index' is missing",
        ),
        (
            [{"image_index": 0, "image_id": "img0"}],
            KeyError,
            r"rows\[0\] \(image_id 'img0'\): field 'text' is missing",
        ),
        (
            [{"image_index": 9, "text": "a"}],
            ValueError,
            r"rows\[0\]: field 'image_index' is 9, outside the feature store",
        ),
        (
            [{"image_index": 2, "image_id": "img3", "text": "a"}],
            ValueError,
            r"rows\[0\] \(image_id 'img3'\): field 'image_index' points at image\(s\) \['img2'\]",
        ),
        (
            [
                {
                    "image_index": 2,
                    **{
                        name: [0] * 5
                        for name in ("input_ids", "attention_mask", "token_type_ids", "position_ids")
                    },
                }
            ],
            ValueError,
            r"field 'input_ids' has lengths \[5\], expected the processor's max_length 12",
        ),
    ],
)
def test_bad_rows_name_the_record_and_field(store, processor, rows, error, message):
    collator = MSPCollator(store, processor, ["mlm", "mrfr"])
    with pytest.raises(error, match=message):
        collator(rows, seed=0)


def test_bad_settings_are_refused(store, processor, tmp_path):
    with pytest.raises(ValueError, match=r"tasks: unknown \['nsp'\]"):
        MSPCollator(store, processor, ["mlm", "nsp"])
    with pytest.raises(ValueError, match=r"tasks: \['itm', 'itm_hs'\] train the same head \(heads.itm\)"):
        MSPCollator(store, processor, ["itm", "itm_hs"], hard_negatives=np.full((NUM_IMAGES, 2), -1))
    with pytest.raises(
        ValueError,
        match=r"'itm_hs' draws hard negatives, received None; load .*store/hard_negatives\.npy .*"
        r"python -m lxmert_s_msp\.data\.hard_negatives .*store",
    ):
        MSPCollator(store, processor, ["mlm", "itm_hs"])
    with pytest.raises(ValueError, match="class_word_mlm_probability: .* needs 'mlm' in tasks"):
        MSPCollator(store, processor, ["itm"], object_vocab=OBJECT_VOCAB, class_word_mlm_probability=0.3)
    with pytest.raises(ValueError, match=r"negative_images: \[.itm.\] need at least 2 images"):
        MSPCollator(store, processor, ["itm"], negative_images=[3])
    with pytest.raises(ValueError, match=r"object_vocab: \['titp'\] need the detector's class names"):
        MSPCollator(store, processor, ["titp"])
    with pytest.raises(ValueError, match="hard_negatives: given, but 'itm_hs'"):
        MSPCollator(store, processor, ["itm"], hard_negatives=np.full((NUM_IMAGES, 2), -1))
    with pytest.raises(ValueError, match=r"hard_negatives: expected shape \(6, M\)"):
        MSPCollator(store, processor, ["itm_hs"], hard_negatives=np.full((3, 2), -1))
    with pytest.raises(KeyError, match="tokenize_corpus: the dataset has no column 'caption'"):
        tokenize_corpus(datasets.Dataset.from_list(corpus_rows()), processor, text_column="caption")


def test_object_ids_outside_the_vocabulary_name_the_image_and_field(store, processor):
    collator = MSPCollator(store, processor, ["titp"], object_vocab=OBJECT_VOCAB[:3])

    with pytest.raises(
        ValueError,
        match=r"image 'img0' \(fed to rows\[0\] \(image_id 'img0'\)\), region 1: field 'object_ids' is 4",
    ):
        collator(corpus_rows())
