"""Held-out ITM accuracy on hand-made cases, and the zero-shot scores' cache and reasons for skipping."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from tiny_curriculum import TINY_MODEL

from lxmert_s_msp.data.collators import visual_inputs
from lxmert_s_msp.data.corpus_builders import flickr30k_dataset, save_corpus
from lxmert_s_msp.data.readers import read_flickr30k_karpathy
from lxmert_s_msp.data.store import FeatureStore
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.evaluation import zero_shot
from lxmert_s_msp.evaluation.zero_shot import ZeroShotSettings, held_out_pairs, itm_accuracy, zero_shot_scores
from lxmert_s_msp.training.stage_data import PretrainingData
from modeling_lxmert_s import LxmertSConfig, LxmertSForPreTraining

# Four store images with two captions each; caption n has n + 1 words, so its length names it.
CAPTIONS = [[" ".join(["red"] * (2 * i + j + 1)) for j in range(2)] for i in range(4)]
OWNERS = [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return generate_world(tmp_path_factory.mktemp("data") / "world", WorldSettings(images=40, feature_dim=32))


class HandMadeITM(torch.nn.Module):
    """ITM logits (mismatch, match) from `decide(caption, image)`, which gets the caption's index (from its
    length) and the image's (the nearest of the images' feature sums, `fingerprints`)."""

    def __init__(self, fingerprints: torch.Tensor, decide):
        super().__init__()
        self.heads = {"itm": None}
        self.fingerprints, self.decide = fingerprints, decide

    def forward(self, input_ids, attention_mask, visual_feats, **_):
        caption = attention_mask.sum(1) - 3  # [CLS] and [SEP] around n + 1 words
        image = (visual_feats.sum((1, 2))[:, None] - self.fingerprints).abs().argmin(1)
        match = self.decide(caption, image).float()
        return SimpleNamespace(itm_logits=torch.stack([1 - match, match], dim=1))


def test_held_out_itm_accuracy_on_hand_made_models(world):
    data = PretrainingData.open(world)
    processor = data.processor(20)
    images = datasets.Dataset.from_dict({"image_index": [5, 6, 7, 8], "captions": CAPTIONS})
    features = visual_inputs(data.store, np.array([5, 6, 7, 8]), processor.num_regions)["visual_feats"]
    fingerprints = features.sum((1, 2))
    owners = torch.tensor(OWNERS)

    def accuracy(decide) -> float:
        model = HandMadeITM(fingerprints, decide)
        return itm_accuracy(model, data.store, processor, images, "test", batch_size=3).accuracy

    assert accuracy(lambda caption, image: owners[caption] == image) == 1.0
    assert accuracy(lambda caption, image: owners[caption] != image) == 0.0
    assert accuracy(lambda caption, image: torch.ones_like(caption, dtype=torch.bool)) == 0.5
    # "match" only for the first image's captions with their image: right on 2 of 8 positives, all 8 negatives
    assert accuracy(lambda caption, image: (owners[caption] == image) & (caption < 2)) == (2 + 8) / 16
    result = itm_accuracy(HandMadeITM(fingerprints, lambda c, i: c >= 0), data.store, processor, images, "t")
    assert result.summary() == (
        "Held-out ITM accuracy (t: 8 captions, each with its image and with another; cross-modal encoder): "
        "50.0% (chance 50%)"
    )


def test_held_out_pairs_put_each_caption_with_its_image_and_another():
    image, caption, label = held_out_pairs([2, 2, 2, 2], seed=0)
    assert caption.tolist() == list(range(8)) * 2 and label.tolist() == [1] * 8 + [0] * 8
    assert image[:8].tolist() == OWNERS
    assert all(other != owner for other, owner in zip(image[8:].tolist(), OWNERS, strict=True))
    assert torch.equal(held_out_pairs([2, 2, 2, 2], seed=0)[0], image)  # a fixed seed, the same pairs
    assert not torch.equal(
        held_out_pairs([2, 2, 2, 2] * 10, seed=1)[0][80:], held_out_pairs([2] * 40)[0][80:]
    )
    with pytest.raises(ValueError, match="with another image; the split has 1"):
        held_out_pairs([5])


@pytest.fixture(scope="module")
def checkpoints(world, tmp_path_factory) -> dict[str, Path]:
    """Tiny saved pre-training models with the world's processor: one with ITM, one without."""
    data = PretrainingData.open(world)
    folders = {}
    for name, tasks in {"itm": ["mlm", "itm"], "no_itm": ["mlm", "mrfr"]}.items():
        torch.manual_seed(0)
        folder = tmp_path_factory.mktemp(name)
        LxmertSForPreTraining(
            LxmertSConfig(**TINY_MODEL, **data.model_sizes(), pretraining_tasks=tasks)
        ).save_pretrained(folder)
        data.processor(20).save_pretrained(folder)
        folders[name] = folder
    return folders


def test_zero_shot_scores_are_reused_only_for_the_same_weights_and_settings(
    world, checkpoints, tmp_path, monkeypatch
):
    cache = tmp_path / "zero_shot_scores.json"
    scores = zero_shot_scores(checkpoints["itm"], world, ZeroShotSettings(), cache)
    assert scores.itm.captions == 20 and list(scores.retrieval.rankings) == ["all_pairs"]  # no VSC head
    written = json.loads(cache.read_text())
    assert written["key"]["rerank_top_k"] == 16 and len(written["key"]["model_files"]) == 64

    def scored_again(*args, **kwargs):
        raise AssertionError("scored again")

    monkeypatch.setattr(zero_shot, "zero_shot_retrieval", scored_again)
    assert zero_shot_scores(checkpoints["itm"], world, ZeroShotSettings(), cache) == scores
    with pytest.raises(AssertionError, match="scored again"):
        zero_shot_scores(checkpoints["itm"], world, ZeroShotSettings(rerank_top_k=4), cache)
    written["key"]["model_files"] = "0" * 64  # scores of other weights
    cache.write_text(json.dumps(written))
    with pytest.raises(AssertionError, match="scored again"):
        zero_shot_scores(checkpoints["itm"], world, ZeroShotSettings(), cache)


def test_zero_shot_scores_say_why_they_are_skipped(world, checkpoints, tmp_path):
    cache = tmp_path / "zero_shot_scores.json"
    no_itm = zero_shot_scores(checkpoints["no_itm"], world, ZeroShotSettings(), cache)
    assert no_itm.summary() == (
        "Held-out ITM accuracy and zero-shot retrieval: skipped, the last stage trains no ITM head to score "
        "pairs with"
    )
    no_corpus = zero_shot_scores(checkpoints["itm"], tmp_path, ZeroShotSettings(), cache)
    assert no_corpus.skipped == f"{tmp_path} has no corpora/flickr30k"
    assert not cache.exists()


def test_zero_shot_scores_are_reused_for_the_same_data_not_the_same_folder(
    world, checkpoints, tmp_path, monkeypatch
):
    """The cache is keyed on what is scored (the retrieval corpus's files, the split's store rows) and on the
    scoring code, not on where the data folder is: a corpus rebuilt in place is scored again, the same data
    copied elsewhere is not."""
    data, cache = tmp_path / "data", tmp_path / "zero_shot_scores.json"
    shutil.copytree(world, data)
    scores = zero_shot_scores(checkpoints["itm"], data, ZeroShotSettings(), cache)

    def scored_again(*args, **kwargs):
        raise AssertionError("scored again")

    monkeypatch.setattr(zero_shot, "zero_shot_retrieval", scored_again)
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    assert zero_shot_scores(checkpoints["itm"], moved, ZeroShotSettings(), cache) == scores

    # the retrieval corpus rebuilt in place with a test image's captions cut to one
    images = read_flickr30k_karpathy(data / "dataset_flickr30k.json")
    test = next(index for index, image in enumerate(images) if image.split == "test")
    images[test].captions[1:] = []
    store = FeatureStore(data / "store")
    save_corpus(flickr30k_dataset(images, store), data / "corpora" / "flickr30k", overwrite=True)
    with pytest.raises(AssertionError, match="scored again"):
        zero_shot_scores(checkpoints["itm"], data, ZeroShotSettings(), cache)

    # a test image's features changed in the store
    features = np.load(moved / "store" / "features.npy", mmap_mode="r+")
    features[FeatureStore(moved / "store").index(images[test].image_id)] += 1
    features.flush()
    with pytest.raises(AssertionError, match="scored again"):
        zero_shot_scores(checkpoints["itm"], moved, ZeroShotSettings(), cache)

    # other scoring code
    shutil.rmtree(moved)
    shutil.copytree(world, moved)
    assert zero_shot_scores(checkpoints["itm"], moved, ZeroShotSettings(), cache) == scores
    monkeypatch.setattr(zero_shot, "SCORING_CODE", "another version")
    with pytest.raises(AssertionError, match="scored again"):
        zero_shot_scores(checkpoints["itm"], moved, ZeroShotSettings(), cache)
