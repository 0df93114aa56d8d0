"""Fine-tuning collators on a tiny synthetic world: labels against hand-built rows, the images fed, negatives
that really are negatives, seeds, and bad rows that name the record and field."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch

from lxmert_s_msp.data.collators import EPOCH_FIELD, INDEX_FIELD, read_regions
from lxmert_s_msp.data.corpus_builders import load_answer_vocab
from lxmert_s_msp.data.downstream_collators import (
    RETRIEVAL_PAIR_KINDS,
    NLVR2Collator,
    QACollator,
    RetrievalCollator,
    retrieval_pairs,
)
from lxmert_s_msp.data.hard_negatives import load_hard_negatives
from lxmert_s_msp.data.store import FeatureStore
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.data.tokenizer import load_tokenizer
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor


def as_trained(rows: list[dict], epoch: int = 0) -> list[dict]:
    """Rows as training hands them to the collator: with the epoch and dataset index that seed the batch."""
    return [{**row, EPOCH_FIELD: epoch, INDEX_FIELD: index} for index, row in enumerate(rows)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("data") / "world", WorldSettings(images=40, feature_dim=32))


@pytest.fixture(scope="module")
def store(world):
    return FeatureStore(world / "store")


@pytest.fixture(scope="module")
def processor(world):
    return LxmertSProcessor(load_tokenizer(world / "tokenizer"))


@pytest.fixture(scope="module")
def flickr(world):
    corpus = datasets.load_from_disk(str(world / "corpora" / "flickr30k"))
    return {split: corpus.filter(lambda row, s=split: row["split"] == s) for split in ("train", "val")}


def fed_images(store: FeatureStore, visual_feats: torch.Tensor) -> list[int]:
    """The store row of each fed image, found by its features (every synthetic image's are distinct)."""
    every = read_regions(store, np.arange(len(store)), visual_feats.shape[1])["features"]
    same = (visual_feats[:, None] == every[None]).flatten(2).all(-1)
    assert (same.sum(1) == 1).all()
    return same.int().argmax(1).tolist()


def encoded(processor: LxmertSProcessor, texts: list[str]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(array) for name, array in processor.encode_text(texts).items()}


# ---- question answering --------------------------------------------------------------------------


def test_qa_labels_are_the_soft_scores_of_the_vocabulary_answers(store, processor):
    rows = [
        {
            "question": "what color is the car?",
            "image_index": 3,
            "image_id": store.image_ids[3],
            "answers": ["red", "kite", "blue"],  # "kite" is not in the vocabulary: no target
            "scores": [1.0, 0.6, 0.3],
        },
        {"question": "is there a dog?", "image_index": 7, "answers": [], "scores": []},  # unlabelled
        {"question": "how many cats are there?", "image_index": 0, "answers": ["2"], "scores": [0.9]},
    ]
    batch = QACollator(store, processor, ["yes", "blue", "2", "red"])(rows)
    expected = torch.tensor([[0.0, 0.3, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.9, 0.0]])
    assert torch.equal(batch["labels"], expected)
    text = encoded(processor, [row["question"] for row in rows])
    assert all(torch.equal(batch[name], text[name]) for name in text)
    regions = read_regions(store, np.array([3, 7, 0]), processor.num_regions)
    assert torch.equal(batch["visual_feats"], regions["features"])
    assert torch.equal(batch["visual_pos"], regions["boxes"])
    assert torch.equal(batch["visual_attention_mask"], regions["visual_attention_mask"].long())
    assert set(batch) == {*text, "visual_feats", "visual_pos", "visual_attention_mask", "labels"}


def test_qa_labels_of_the_world_corpus_hold_every_row_score(world, store, processor):
    corpus = datasets.load_from_disk(str(world / "corpora" / "vqa_val"))
    vocabulary = load_answer_vocab(world / "corpora" / "vqa_train")
    rows = [corpus[i] for i in range(len(corpus))]
    labels = QACollator(store, processor, vocabulary)(rows)["labels"]
    assert labels.shape == (len(rows), len(vocabulary))
    for b, row in enumerate(rows):
        assert (labels[b] > 0).sum() == len(row["answers"])
        for answer, score in zip(row["answers"], row["scores"], strict=True):
            assert labels[b, vocabulary.index(answer)].item() == pytest.approx(score)


# ---- NLVR2 -----------------------------------------------------------------------------------------


def test_nlvr2_feeds_each_sentence_its_two_images_in_order(world, store, processor):
    corpus = datasets.load_from_disk(str(world / "corpora" / "nlvr2_val"))
    rows = [corpus[i] for i in range(len(corpus))]
    batch = NLVR2Collator(store, processor)(rows)
    assert batch["visual_feats"].shape == (len(rows), 2, processor.num_regions, 32)
    assert batch["visual_pos"].shape == (len(rows), 2, processor.num_regions, 4)
    assert batch["visual_attention_mask"].shape == (len(rows), 2, processor.num_regions)
    assert batch["labels"].tolist() == [row["label"] for row in rows]
    assert batch["input_ids"].shape == (len(rows), processor.max_length)
    for side in (0, 1):
        assert fed_images(store, batch["visual_feats"][:, side]) == [
            row["image_indices"][side] for row in rows
        ]
    assert len({tuple(row["image_indices"]) for row in rows}) > 1


# ---- retrieval -------------------------------------------------------------------------------------


def test_retrieval_pairs_are_one_row_per_caption(flickr):
    pairs = retrieval_pairs(flickr["train"])
    assert len(pairs) == sum(len(captions) for captions in flickr["train"]["captions"])
    first = flickr["train"][0]
    assert pairs[: len(first["captions"])] == {
        "image_id": [first["image_id"]] * len(first["captions"]),
        "image_index": [first["image_index"]] * len(first["captions"]),
        "text": first["captions"],
    }


def caption_owners(processor, batch, kind: int, images) -> list[list[int]]:
    """Per pair of `kind`, the images (rows of `images`) one of whose captions is the pair's text."""
    texts = [processor.tokenizer.decode(ids, skip_special_tokens=True) for ids in batch["input_ids"][kind::4]]
    return [
        [row["image_index"] for row in images if text in [caption.lower() for caption in row["captions"]]]
        for text in texts
    ]


def test_retrieval_negatives_are_a_random_caption_a_random_image_and_a_hard_caption(store, processor, flickr):
    train = flickr["train"]
    hard = load_hard_negatives(store.path)
    collator = RetrievalCollator(store, processor, train, hard, seed=0)
    pairs = retrieval_pairs(train)
    rows = as_trained([pairs[i] for i in range(0, len(pairs), 5)])  # one caption of every training image
    batch = collator(rows)
    assert RETRIEVAL_PAIR_KINDS == ("positive", "random_caption", "random_image", "hard_caption")
    assert batch["labels"].tolist() == [1.0, 0.0, 0.0, 0.0] * len(rows)
    fed = np.array(fed_images(store, batch["visual_feats"])).reshape(len(rows), 4)
    own = np.array([row["image_index"] for row in rows])
    training_images = set(train["image_index"])
    assert set(fed.ravel()) <= training_images  # no val/test image is ever fed
    # the anchor image with its caption, a random caption and a hard caption; the caption with a random image
    assert (fed[:, [0, 1, 3]] == own[:, None]).all() and (fed[:, 2] != own).all()
    ids = batch["input_ids"].view(len(rows), 4, -1)
    for b, row in enumerate(rows):
        own_ids = encoded(processor, [row["text"]])["input_ids"][0]
        assert torch.equal(ids[b, 0], own_ids) and torch.equal(ids[b, 2], own_ids)
    random_owners = caption_owners(processor, batch, 1, train)
    hard_owners = caption_owners(processor, batch, 3, train)
    for b, image in enumerate(own):
        assert random_owners[b] and image not in random_owners[b]
        # the hard caption belongs to one of the image's listed neighbours among the training images
        neighbours = [row for row in hard[image] if row in training_images]
        assert hard_owners[b] and set(hard_owners[b]) & set(neighbours) and image not in hard_owners[b]


def test_hard_negatives_outside_the_training_images_are_skipped(store, processor, flickr):
    train, val = flickr["train"], flickr["val"]
    image, neighbour = train[0]["image_index"], train[5]["image_index"]
    hard = np.full((len(store), 3), -1)
    hard[image] = [val[0]["image_index"], neighbour, -1]  # a held-out image first: never drawn
    collator = RetrievalCollator(store, processor, train, hard, seed=0)
    rows = as_trained([{"image_index": image, "text": train[0]["captions"][0]}] * 6)
    batch = collator(rows)
    assert caption_owners(processor, batch, 3, train) == [[neighbour]] * 6


def test_without_hard_negatives_the_hard_caption_is_a_random_other_training_images(store, processor, flickr):
    train = flickr["train"]
    collator = RetrievalCollator(store, processor, train, seed=0)
    image = train[2]["image_index"]
    batch = collator(as_trained([{"image_index": image, "text": "a red car left of a dog."}] * 30))
    owners = [owner for owners in caption_owners(processor, batch, 3, train) for owner in owners]
    assert image not in owners and set(owners) <= set(train["image_index"])
    assert len(set(owners)) > 5


def test_retrieval_batches_follow_the_seed(store, processor, flickr):
    train = flickr["train"]
    rows = as_trained([retrieval_pairs(train)[i] for i in range(8)])
    first, second = (RetrievalCollator(store, processor, train, seed=3) for _ in range(2))
    a = first(rows)
    first(as_trained(rows, epoch=1))  # calls in between change nothing: no call counter
    for b in (first(rows), second(rows)):  # two collators of one seed give identical batches
        assert all(torch.equal(a[name], b[name]) for name in a)
    assert not torch.equal(a["visual_feats"], first(as_trained(rows, epoch=1))["visual_feats"])
    again = first(rows, seed=11), second(rows, seed=11)
    assert all(torch.equal(again[0][name], again[1][name]) for name in again[0])
    other = RetrievalCollator(store, processor, train, seed=4)(rows)
    assert not torch.equal(
        other["visual_feats"], RetrievalCollator(store, processor, train, seed=3)(rows)["visual_feats"]
    )


# ---- errors ----------------------------------------------------------------------------------------


def qa_row(**overrides) -> dict:
    return {"question": "is there a dog?", "image_index": 1, "answers": ["yes"], "scores": [1.0], **overrides}


def nlvr2_row(**overrides) -> dict:
    return {"sentence": "both images contain a dog.", "image_indices": [0, 1], "label": 1, **overrides}


@pytest.mark.parametrize(
    ("collator", "row", "error", "message"),
    [
        (
            "qa",
            {"image_index": 1, "answers": [], "scores": []},
            KeyError,
            r"rows\[1\]: field 'question' is missing",
        ),
        (
            "qa",
            qa_row(scores=[1.0, 0.3]),
            ValueError,
            r"rows\[1\]: field 'scores' has 2 values for 1 answers",
        ),
        ("qa", qa_row(scores=[1.5]), ValueError, r"rows\[1\]: field 'scores' holds 1.5, outside \[0, 1\]"),
        (
            "qa",
            qa_row(image_index=40),
            ValueError,
            r"rows\[1\]: field 'image_index' is 40, outside the feature",
        ),
        (
            "qa",
            qa_row(image_id="1000005"),
            ValueError,
            r"rows\[1\] \(image_id '1000005'\): field 'image_index' points at image\(s\) \['1000001'\]",
        ),
        (
            "nlvr2",
            nlvr2_row(image_indices=[0, 1, 2]),
            ValueError,
            r"rows\[1\]: field 'image_indices' holds 3",
        ),
        ("nlvr2", nlvr2_row(label=2), ValueError, r"rows\[1\]: field 'label' is 2, expected 0 or 1"),
        (
            "nlvr2",
            nlvr2_row(image_ids=["1000000", "1000002"]),
            ValueError,
            r"rows\[1\]: field 'image_indices' points at image\(s\) \['1000000', '1000001'\]",
        ),
        (
            "retrieval",
            {"image_index": 39, "text": "a dog."},  # a test image
            ValueError,
            r"rows\[1\]: field 'image_index' is not one of the collator's 32 images",
        ),
        ("retrieval", {"image_index": 0}, KeyError, r"rows\[1\]: field 'text' is missing"),
    ],
)
def test_bad_rows_name_the_record_and_field(store, processor, flickr, collator, row, error, message):
    collate, good = {
        "qa": (QACollator(store, processor, ["yes", "no"]), qa_row()),
        "nlvr2": (NLVR2Collator(store, processor), nlvr2_row()),
        "retrieval": (
            RetrievalCollator(store, processor, flickr["train"]),
            {"image_index": 0, "text": "a dog."},
        ),
    }[collator]
    with pytest.raises(error, match=message):
        collate(as_trained([good, row]))


def test_bad_settings_are_refused(store, processor, flickr):
    with pytest.raises(ValueError, match=r"answer_vocab: answers must be unique, \['yes'\] repeat"):
        QACollator(store, processor, ["yes", "no", "yes"])
    one_image = flickr["train"].select([0])
    with pytest.raises(ValueError, match="images: expected at least 2 images, each once"):
        RetrievalCollator(store, processor, one_image)
    with pytest.raises(ValueError, match=r"hard_negatives: expected shape \(40, M\)"):
        RetrievalCollator(store, processor, flickr["train"], np.full((3, 2), -1))
    no_captions = [{"image_index": 0, "captions": ["a dog."]}, {"image_index": 1, "captions": []}]
    with pytest.raises(ValueError, match=r"rows\[1\]: field 'captions' is empty"):
        RetrievalCollator(store, processor, no_captions)
