"""The synthetic world: deterministic, in the public formats, and learnable only by looking at the regions."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk
from transformers import AutoTokenizer

from lxmert_s_msp.data.hard_negatives import load_hard_negatives
from lxmert_s_msp.data.readers import (
    Nlvr2Pair,
    read_class_vocab,
    read_coco_captions,
    read_flickr30k_karpathy,
    read_lxmert_nlvr2_json,
    read_lxmert_qa_json,
    read_vg_region_descriptions,
)
from lxmert_s_msp.data.store import FeatureStore
from lxmert_s_msp.data.synthetic import (
    ATTRIBUTES,
    CATEGORIES,
    OBJECT_CLASSES,
    STATEMENT_KINDS,
    VERBS,
    WORLD_FORMAT,
    Scene,
    SceneObject,
    WorldSettings,
    captions,
    generate_world,
    make_scenes,
    nlvr2_pair,
    region_phrases,
    statement_holds,
    statement_text,
)
from lxmert_s_msp.data.verbs import contains_verb
from lxmert_s_msp.evidence.world_baselines import measure, nlvr2_text_only_accuracy, statement_kind

REPO = Path(__file__).resolve().parents[1]
SMALL = WorldSettings(images=40, feature_dim=16, seed=7)


def within_binomial(count: int, trials: int, probability: float, sigmas: float = 4.0) -> bool:
    return abs(count - trials * probability) <= sigmas * (trials * probability * (1 - probability)) ** 0.5


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world") / "world", SMALL)


@pytest.fixture(scope="module")
def larger_world(tmp_path_factory):
    """Enough images and feature dimensions for the learnability checks to be more than noise."""
    return generate_world(
        tmp_path_factory.mktemp("world") / "world", WorldSettings(images=400, feature_dim=64, seed=1)
    )


def file_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of a folder, by relative path."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_a_seed_makes_the_same_world_and_another_seed_another(world, tmp_path):
    again = generate_world(tmp_path / "again", SMALL)
    other = generate_world(tmp_path / "other", replace(SMALL, seed=8))
    digests = file_digests(world)
    assert {"tokenizer/tokenizer.json", "store/features.npy", "corpora/captions/state.json"} <= set(digests)
    assert file_digests(again) == digests
    differing = {name for name, digest in file_digests(other).items() if digests.get(name) != digest}
    assert {"tokenizer/tokenizer.json", "store/features.npy", "captions_train.json"} <= differing


def test_two_fresh_builds_of_the_default_world_are_identical_file_for_file(tmp_path):
    """Each in its own process with its own hash seed: nothing may depend on set or dict order, or on the
    hash-map order of a library (the `tokenizers` WordPiece trainer's vocabulary did)."""
    builds = [
        subprocess.Popen(
            [sys.executable, "-m", "lxmert_s_msp.data.synthetic", str(tmp_path / f"world-{seed}")],
            env={**os.environ, "PYTHONHASHSEED": str(seed), "OMP_NUM_THREADS": "1"},
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    for build in builds:
        _, errors = build.communicate(timeout=300)
        assert build.returncode == 0, errors
    first, second = (file_digests(tmp_path / f"world-{seed}") for seed in (1, 2))
    assert len(first) > 50 and "tokenizer/tokenizer.json" in first
    assert first == second


def test_an_existing_world_is_reused_and_a_different_one_refused(world):
    stamp = (world / "world.json").stat().st_mtime_ns
    assert generate_world(world, SMALL) == world
    assert (world / "world.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="other settings"):
        generate_world(world, replace(SMALL, seed=99))
    # a world of an older generator (its world.json without this format) is not taken for this one's
    marker = world / "world.json"
    stamp = json.loads(marker.read_text())
    try:
        marker.write_text(json.dumps({**stamp, "format": WORLD_FORMAT - 1}))
        with pytest.raises(FileExistsError, match="older version of the generator"):
            generate_world(world, SMALL)
    finally:
        marker.write_text(json.dumps(stamp))
    with pytest.raises(ValueError, match="at least 20 images"):
        generate_world(world.parent / "tiny", replace(SMALL, images=10))


def test_the_store_looks_like_a_detectors(world):
    store = FeatureStore(world / "store")
    assert store.features.shape == (SMALL.images, SMALL.regions, SMALL.feature_dim)
    assert (store.num_boxes == SMALL.regions).all()
    assert (store.features >= 0).all()  # ReLU features, as pooled CNN features
    assert (np.diff(store.object_confidences, axis=1) <= 0).all()  # listed by confidence
    assert ((store.boxes >= 0) & (store.boxes <= 1)).all()
    assert (store.boxes[..., 2:] >= store.boxes[..., :2]).all()
    assert load_hard_negatives(world / "store").shape == (SMALL.images, SMALL.images - 1)


def test_files_are_in_the_public_formats_and_read_back(world):
    assert read_class_vocab(world / "objects_vocab.txt") == list(OBJECT_CLASSES)
    assert read_class_vocab(world / "attributes_vocab.txt") == list(ATTRIBUTES)
    store = FeatureStore(world / "store")
    phrases = read_vg_region_descriptions(world / "region_descriptions.json")
    assert {phrase.image_id for phrase in phrases} == set(store.image_ids)
    images = read_flickr30k_karpathy(world / "dataset_flickr30k.json")
    assert {image.split for image in images} == {"train", "val", "test"}
    assert all(len(image.captions) == SMALL.captions_per_image for image in images)
    train = {image.image_id for image in images if image.split == "train"}
    assert {caption.image_id for caption in read_coco_captions(world / "captions_train.json")} == train
    for split in ("train", "val", "test"):
        questions = read_lxmert_qa_json(world / "vqa" / f"{split}.json")
        assert len(questions) == SMALL.questions_per_image * sum(image.split == split for image in images)
        assert all(max(question.scores) >= 0.9 for question in questions)  # most annotators agree
        pairs = read_lxmert_nlvr2_json(world / "nlvr2" / f"{split}.json")
        assert pairs and {pair.label for pair in pairs} <= {0, 1}


def test_corpora_use_train_images_and_the_verb_filter_has_work(world):
    train = {
        image.image_id
        for image in read_flickr30k_karpathy(world / "dataset_flickr30k.json")
        if image.split == "train"
    }
    for name in ("tokens", "phrases", "captions", "vqa_train"):
        assert set(load_from_disk(world / "corpora" / name)["image_id"]) == train, name
    test_images = set(load_from_disk(world / "corpora" / "vqa_test")["image_id"])
    assert test_images and not test_images & train
    raw = [phrase.phrase for phrase in read_vg_region_descriptions(world / "region_descriptions.json")]
    with_verbs = [phrase for phrase in raw if any(f" {verb} " in phrase for verb in VERBS)]
    assert with_verbs and all(contains_verb(phrase) for phrase in with_verbs)
    kept = ", ".join(
        phrase for row in load_from_disk(world / "corpora" / "phrases")["phrases"] for phrase in row
    )
    assert not any(f" {verb} " in kept for verb in VERBS)


def test_a_caption_fraction_keeps_captions_for_that_share_of_images_and_every_other_corpus_whole(
    world, tmp_path
):
    scarce = generate_world(tmp_path / "scarce", replace(SMALL, caption_fraction=0.25))
    train = {
        image.image_id
        for image in read_flickr30k_karpathy(world / "dataset_flickr30k.json")
        if image.split == "train"
    }
    captioned = set(load_from_disk(scarce / "corpora" / "captions")["image_id"])
    assert captioned < train and len(captioned) == round(0.25 * len(train))
    for name in ("tokens", "phrases", "vqa_train"):  # the cheap texts still cover every training image
        assert set(load_from_disk(scarce / "corpora" / name)["image_id"]) == train, name
    # the captions kept are those of the full world, and nothing else changes: not the scenes, the retrieval
    # captions, the questions or the tokenizer
    full = load_from_disk(world / "corpora" / "captions")
    kept = [(i, text) for i, text in zip(full["image_id"], full["text"], strict=True) if i in captioned]
    rows = load_from_disk(scarce / "corpora" / "captions")
    assert list(zip(rows["image_id"], rows["text"], strict=True)) == kept
    same = file_digests(world)
    changed = {name for name, digest in file_digests(scarce).items() if same.get(name) != digest}
    assert {"captions_train.json", "world.json"} <= changed
    assert not changed & {"dataset_flickr30k.json", "store/features.npy", "tokenizer/tokenizer.json"}
    assert not {name for name in changed if name.startswith(("vqa/", "corpora/tokens/", "corpora/phrases/"))}
    with pytest.raises(ValueError, match=r"caption_fraction: .* in \(0, 1\], got 0"):
        generate_world(tmp_path / "none", replace(SMALL, caption_fraction=0.0))


def test_the_tokenizer_knows_every_class_and_attribute(world):
    tokenizer = AutoTokenizer.from_pretrained(world / "tokenizer")
    ids = tokenizer(list(OBJECT_CLASSES + ATTRIBUTES), add_special_tokens=False)["input_ids"]
    assert all(tokenizer.unk_token_id not in piece for piece in ids)


def test_what_a_region_is_can_be_read_from_its_feature(larger_world):
    store = FeatureStore(larger_world / "store")
    confident = store.object_confidences[:] >= 0.6
    features = store.features[:][confident].astype(np.float64)
    labels = store.object_ids[:][confident]
    half = len(features) // 2
    inputs = np.hstack([features, np.ones((len(features), 1))])
    decoder = np.linalg.lstsq(inputs[:half], np.eye(len(OBJECT_CLASSES))[labels[:half]], rcond=None)[0]
    accuracy = (np.argmax(inputs[half:] @ decoder, 1) == labels[half:]).mean()
    assert accuracy > 0.9  # chance is 1/57; confident detections carry the right label


def test_answers_need_the_regions_and_grounding_helps(larger_world):
    results = measure(larger_world)
    assert results["text only"]["all"] <= results["prior"]["all"] + 0.1
    assert results["grounded"]["all"] >= results["text only"]["all"] + 0.25
    assert results["grounded"]["color"] >= results["text only"]["color"] + 0.4


def test_nlvr2_statements_are_true_or_false_half_the_time_whatever_their_kind():
    rng = np.random.default_rng(3)
    scenes = make_scenes(WorldSettings(images=200), rng)
    pairs = [nlvr2_pair(scenes, rng) for _ in range(3000)]

    texts = {
        statement_text(kind, category): (kind, category)
        for kind in STATEMENT_KINDS
        for category in CATEGORIES
    }
    for left, right, sentence, label in pairs:  # each label is what the statement says of its two images
        kind, category = texts[sentence]
        assert statement_holds(kind, category, left, right) == bool(label)
        assert category in {item.category for item in (*left.objects, *right.objects)}
    for kind in STATEMENT_KINDS:
        labels = [label for _, _, sentence, label in pairs if texts[sentence][0] == kind]
        assert within_binomial(sum(labels), len(labels), 0.5), kind
    records = [
        Nlvr2Pair("p", (left.image_id, right.image_id), text, label) for left, right, text, label in pairs
    ]
    accuracy = nlvr2_text_only_accuracy(records[:2000], records[2000:])
    assert abs(accuracy - 0.5) <= 4 * (0.25 / 1000) ** 0.5  # the text alone is a coin toss


def test_the_nlvr2_text_only_answerer_takes_each_statement_kinds_majority_label():
    def pair(sentence: str, label: int) -> Nlvr2Pair:
        return Nlvr2Pair("p", ("1", "2"), sentence, label)

    train = [
        pair("both images contain a dog.", 0),
        pair("both images contain a cat.", 0),
        pair("both images contain a bus.", 1),
        pair("exactly one image contains a man.", 1),
    ]
    assert statement_kind("the left image has more buses than the right image.") == statement_kind(
        "the left image has more men than the right image."
    )
    test = [
        pair("both images contain a horse.", 0),  # majority 0: right
        pair("both images contain a child.", 1),  # wrong
        pair("exactly one image contains a tree.", 1),  # majority 1: right
        pair("the left image has more cups than the right image.", 0),  # unseen kind, guessed 1: wrong
    ]
    assert nlvr2_text_only_accuracy(train, test) == 0.5


def test_captions_and_phrases_count_the_groups_of_one_category():
    rng = np.random.default_rng(0)
    box = (0.1, 0.1, 0.3, 0.3)
    scene = Scene(
        "1",
        100,
        100,
        [SceneObject(category, "red", "small", "wooden", box) for category in ("dog", "dog", "car")],
    )
    assert "two dogs" in region_phrases(scene, rng)
    texts = captions(scene, 40, rng)
    assert any(text.startswith("two dogs and a ") and text.endswith(" car.") for text in texts)
    assert any(text.startswith("a ") for text in texts)  # the other half still places two objects
    alone = Scene(
        "2", 100, 100, [SceneObject(category, "red", "small", "wooden", box) for category in ("dog", "car")]
    )
    assert all(text.startswith("a ") for text in captions(alone, 20, rng))  # nothing to count
