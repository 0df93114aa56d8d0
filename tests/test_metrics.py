"""Local metrics against scores worked out by hand; the slow retrieval reference loop lives here only."""

import socket

import numpy as np
import pytest

from lxmert_s_msp.evaluation.metrics import METRIC_NAMES, load_metric

DEFAULT_KEYS = ("text_r1", "text_r5", "text_r10", "image_r1", "image_r5", "image_r10")


@pytest.fixture
def vqa():
    return load_metric("vqa_accuracy")


@pytest.fixture
def recall():
    return load_metric("retrieval_recall")


@pytest.fixture
def accuracy():
    return load_metric("accuracy")


def test_every_metric_loads_by_path_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    for name in METRIC_NAMES:
        metric = load_metric(name)
        assert metric.name == name
        assert metric.info.citation.strip()
        assert metric.info.inputs_description.strip()


def test_unknown_metric_is_named():
    with pytest.raises(ValueError, match=r"unknown metric 'bleu'; choose one of \['accuracy'"):
        load_metric("bleu")


# Ten annotators, n of them gave the predicted answer. A leave-one-out subset that drops one of the n keeps
# n - 1 matches, the 10 - n others keep n: n = 1 -> (1 * 0 + 9 * 1/3) / 10 = 0.3; n = 2 -> (2 * 1/3 + 8 * 2/3)
# / 10 = 0.6; n = 3 -> (3 * 2/3 + 7 * 1) / 10 = 0.9; n = 4 -> (4 * 1 + 6 * 1) / 10 = 1.
@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_leave_one_out_over_ten_annotators(vqa, matches, expected):
    answers = ["red"] * matches + ["blue"] * (10 - matches)
    assert vqa.compute(predictions=["red"], references=[answers])["vqa_accuracy"] == pytest.approx(expected)


def test_vqa_averages_over_questions(vqa):
    references = [["cat"] * 2 + ["dog"] * 8, ["yes"] * 10, ["2"] * 3 + ["3"] * 7]
    # 0.6, 1.0 and 0 (nobody said "4").
    result = vqa.compute(predictions=["cat", "yes", "4"], references=references)
    assert result["vqa_accuracy"] == pytest.approx((0.6 + 1.0 + 0.0) / 3)


@pytest.mark.parametrize(
    "answers, expected",
    [
        # 3 annotators, all agree: every subset of 2 holds 2 matches -> 2/3.
        (["yes", "yes", "yes"], 2 / 3),
        # 5 annotators, 3 agree: dropping one of the 3 leaves 2 (2/3), dropping another leaves 3 (1).
        (["yes", "yes", "yes", "no", "no"], (3 * 2 / 3 + 2 * 1) / 5),
        # 2 annotators, 1 agrees: dropping it leaves 0, dropping the other leaves 1 (1/3).
        (["yes", "no"], (0 + 1 / 3) / 2),
        # 1 annotator: no leave-one-out, min(1/3, 1) on the full set.
        (["yes"], 1 / 3),
        (["no"], 0.0),
    ],
)
def test_vqa_other_annotator_counts(vqa, answers, expected):
    assert vqa.compute(predictions=["yes"], references=[answers])["vqa_accuracy"] == pytest.approx(expected)


@pytest.mark.parametrize(
    "prediction, human",
    [
        ("Two", "2"),
        ("none", "0"),
        ("The dog.", "dog"),
        ("an apple", "apple"),
        ("  YES \t", "yes"),
        ("dont", "don't"),
        ("1,000", "1000"),
        ("black/white", "black white"),
        ("red , white", "red white"),
        ("yes!", "yes"),
        ("2", "Two"),
    ],
)
def test_vqa_official_normalisation_matches(vqa, prediction, human):
    result = vqa.compute(predictions=[prediction], references=[[human] * 10])
    assert result["vqa_accuracy"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "prediction, human",
    [
        ("3.5", "35"),  # a period before a digit is kept
        ("black/white", "blackwhite"),  # a mark inside a word becomes a space
        ("yes", "no"),
    ],
)
def test_vqa_normalisation_keeps_different_answers_apart(vqa, prediction, human):
    result = vqa.compute(predictions=[prediction], references=[[human] * 10])
    assert result["vqa_accuracy"] == 0.0


def test_vqa_empty_answer_list_names_the_record(vqa):
    with pytest.raises(ValueError, match=r"record 1: field 'references' is empty"):
        vqa.compute(predictions=["yes", "no"], references=[["yes"] * 10, []])


def test_vqa_length_mismatch_is_refused(vqa):
    with pytest.raises(ValueError, match=r"Mismatch in the number of predictions \(2\) and references \(1\)"):
        vqa.compute(predictions=["yes", "no"], references=[["yes"] * 10])


def test_vqa_needs_a_record(vqa):
    with pytest.raises(ValueError, match="at least one record"):
        vqa.compute(predictions=[], references=[])


def test_recall_by_hand_with_several_captions_per_image(recall):
    # Image 0 owns captions 0 and 1, image 1 owns 2 and 3, image 2 owns 4.
    scores = [
        [0.1, 0.9, 0.8, 0.0, 0.3],  # best own caption 1 (0.9) tops the row: rank 0
        [0.2, 0.6, 0.5, 0.4, 0.7],  # best own caption 2 (0.5) is under 0.6 and 0.7: rank 2
        [0.5, 0.1, 0.2, 0.9, 0.3],  # own caption 4 (0.3) is under 0.5 and 0.9: rank 2
    ]
    references = [[0, 1], [2, 3], [4]]
    result = recall.compute(predictions=scores, references=references, ks=[1, 2, 3])
    # Text ranks 0, 2, 2.
    assert result["text_r1"] == pytest.approx(1 / 3)
    assert result["text_r2"] == pytest.approx(1 / 3)
    assert result["text_r3"] == pytest.approx(1.0)
    # Image ranks per caption (column against its own image): caption 0: 0.1 under 0.2, 0.5 -> 2;
    # caption 1: 0.9 tops -> 0; caption 2: 0.5 under 0.8 -> 1; caption 3: 0.4 under 0.9 -> 1;
    # caption 4: 0.3 equals image 0's 0.3 (tie counts against) and is under 0.7 -> 2.
    assert result["image_r1"] == pytest.approx(1 / 5)
    assert result["image_r2"] == pytest.approx(3 / 5)
    assert result["image_r3"] == pytest.approx(1.0)


def test_recall_ties_count_against_the_right_candidate(recall):
    # A constant scorer: each image's best caption ties with the 2 captions of the other image, each caption's
    # image ties with the 1 other image.
    result = recall.compute(predictions=[[0.5] * 4] * 2, references=[[0, 1], [2, 3]], ks=[1, 2, 3])
    assert result == pytest.approx(
        {"text_r1": 0.0, "text_r2": 0.0, "text_r3": 1.0, "image_r1": 0.0, "image_r2": 1.0, "image_r3": 1.0}
    )


def test_recall_tie_between_right_captions_is_harmless(recall):
    # Image 0's two captions tie at the top; only wrong candidates can push a right one down.
    result = recall.compute(predictions=[[0.9, 0.9, 0.1], [0.1, 0.1, 0.9]], references=[[0, 1], [2]], ks=[1])
    assert result == {"text_r1": 1.0, "image_r1": 1.0}


def test_recall_k_beyond_the_candidates_always_hits(recall):
    # Every right candidate scores lowest, yet 10 covers all 3 captions and all 2 images.
    result = recall.compute(
        predictions=[[0.0, 0.9, 0.9], [0.9, 0.0, 0.0]], references=[[0], [1, 2]], ks=[1, 10]
    )
    assert result == {"text_r1": 0.0, "text_r10": 1.0, "image_r1": 0.0, "image_r10": 1.0}


def test_recall_default_cutoffs(recall):
    result = recall.compute(predictions=[[1.0, 0.0], [0.0, 1.0]], references=[[0], [1]])
    assert result == dict.fromkeys(DEFAULT_KEYS, 1.0)


def slow_pessimistic_hits(scores: np.ndarray, references: list[list[int]], k: int) -> tuple[float, float]:
    """Sort every candidate list with wrong candidates first among equal scores and look at the top k."""
    num_images, num_captions = scores.shape
    text_hits = 0
    for image in range(num_images):
        order = sorted(range(num_captions), key=lambda c: (-scores[image, c], c in references[image]))
        text_hits += any(c in references[image] for c in order[:k])
    image_hits = 0
    for image, captions in enumerate(references):
        for caption in captions:
            order = sorted(range(num_images), key=lambda i: (-scores[i, caption], i == image))
            image_hits += image in order[:k]
    return text_hits / num_images, image_hits / num_captions


def test_recall_agrees_with_a_slow_sorting_loop(recall):
    rng = np.random.default_rng(0)
    num_images, num_captions = 7, 23
    # Few distinct values, so ties are everywhere.
    scores = rng.integers(0, 4, size=(num_images, num_captions)).astype(np.float32)
    owners = np.concatenate([np.arange(num_images), rng.integers(0, num_images, num_captions - num_images)])
    rng.shuffle(owners)
    references = [np.flatnonzero(owners == image).tolist() for image in range(num_images)]
    ks = [1, 2, 3, 5, 10, 25]
    result = recall.compute(predictions=scores.tolist(), references=references, ks=ks)
    for k in ks:
        text, image = slow_pessimistic_hits(scores, references, k)
        assert result[f"text_r{k}"] == pytest.approx(text), k
        assert result[f"image_r{k}"] == pytest.approx(image), k


def test_recall_flickr30k_sized_matrix(recall):
    # 1000 images x 5 captions. Images 0..499 score their captions 2 (above all noise in [0, 1)): hits;
    # images 500..999 score them -1 (below everything): misses at every K, both directions.
    rng = np.random.default_rng(0)
    scores = rng.random((1000, 5000), dtype=np.float32)
    references = [list(range(5 * image, 5 * image + 5)) for image in range(1000)]
    for image, captions in enumerate(references):
        scores[image, captions] = 2.0 if image < 500 else -1.0
    result = recall.compute(predictions=scores, references=references)
    assert result == dict.fromkeys(DEFAULT_KEYS, 0.5)


@pytest.mark.parametrize(
    "predictions, references, ks, message",
    [
        ([[1.0, 0.0], [0.0, 1.0]], [[0, 1], [1]], [1], r"caption 1 is listed by records \[0, 1\]"),
        ([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]], [[0], [1]], [1], r"caption 2 is in no record's field"),
        ([[1.0, 0.0], [0.0, 1.0]], [[0], [7]], [1], r"record 1: field 'references' holds caption 7"),
        ([[1.0, 0.0], [0.0, 1.0]], [[], [0, 1]], [1], r"record 0: field 'references' is empty"),
        ([[1.0, 0.0], [0.0]], [[0], [1]], [1], r"record 1: field 'predictions' has 1 scores, record 0 has 2"),
        (
            [[1.0, float("nan")], [0.0, 1.0]],
            [[0], [1]],
            [1],
            r"record 0: field 'predictions' is NaN for caption 1",
        ),
        ([[1.0, 0.0], [0.0, 1.0]], [[0], [1]], [0], r"ks must be positive integers"),
    ],
)
def test_recall_bad_input_is_named(recall, predictions, references, ks, message):
    with pytest.raises(ValueError, match=message):
        recall.compute(predictions=predictions, references=references, ks=ks)


def test_accuracy_by_hand(accuracy):
    assert accuracy.compute(predictions=[1, 0, 1, 1], references=[1, 1, 1, 0]) == {"accuracy": 0.5}
    assert accuracy.compute(predictions=[3, 1, 4], references=[3, 1, 5]) == pytest.approx({"accuracy": 2 / 3})


def test_accuracy_needs_a_record(accuracy):
    with pytest.raises(ValueError, match="at least one record"):
        accuracy.compute(predictions=[], references=[])
