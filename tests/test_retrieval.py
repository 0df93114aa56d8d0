"""Retrieval evaluation: the standard protocol and the released LXMERT-S code's 1k x 1k text retrieval;
two-stage retrieval (contrastive ranking, ITM re-ranking of the top k) against ITM on every pair; chance."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
import torch
from tiny_curriculum import TINY_MODEL
from transformers.modeling_outputs import BaseModelOutputWithPooling

from lxmert_s_msp.data.downstream_data import retrieval_split
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.evaluation import retrieval
from lxmert_s_msp.evaluation.retrieval import (
    EncodedSplit,
    chance_recalls,
    contrastive_similarity,
    evaluate_retrieval,
    itm_match_scorer,
    rerank,
)
from lxmert_s_msp.training.stage_data import PretrainingData
from modeling_lxmert_s import LxmertSConfig, LxmertSForPreTraining

# Three images with two captions each (captions 0-1, 2-3, 4-5). Every image scores its second caption
# highest; image 2 ranks image 0's first caption above its own first caption.
SCORES = torch.tensor(
    [
        [0.5, 0.9, 0.1, 0.2, 0.1, 0.1],
        [0.1, 0.2, 0.5, 0.9, 0.2, 0.1],
        [0.6, 0.1, 0.1, 0.2, 0.4, 0.9],
    ]
)
IMAGES = datasets.Dataset.from_dict(
    {"image_index": [0, 1, 2], "captions": [["a0", "b0"], ["a1", "b1"], ["a2", "b2"]]}
)
# A contrastive similarity that disagrees with an ITM score preferring every right pair (1 against 0). Image
# retrieval: captions 2 and 4 have their image first; 0, 3 and 5 second; caption 1 third. Text retrieval:
# image 0's captions come third and sixth (behind captions 3 and 5), images 1 and 2 have one of theirs first.
SIMILARITY = torch.tensor(
    [
        [0.5, 0.1, 0.2, 0.9, 0.15, 0.8],
        [0.9, 0.85, 0.95, 0.5, 0.2, 0.25],
        [0.1, 0.5, 0.05, 0.12, 0.9, 0.55],
    ]
)
MATCHED = torch.tensor([[1.0, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]])


class HandBuiltModel:
    """`get_image_features` / `get_text_features` whose products are `similarity`: image i embeds as the i-th
    unit vector, caption c as column c of `similarity`; `contrastive_logit_scale` 0 re-ranks by ITM alone."""

    def __init__(self, similarity: torch.Tensor, contrastive_logit_scale: float = 0.0):
        self.similarity, self.contrastive_logit_scale = similarity, contrastive_logit_scale

    def get_image_features(self, visual_feats: torch.Tensor) -> BaseModelOutputWithPooling:
        return BaseModelOutputWithPooling(pooler_output=torch.eye(len(self.similarity))[visual_feats[:, 0]])

    def get_text_features(self, input_ids: torch.Tensor) -> BaseModelOutputWithPooling:
        return BaseModelOutputWithPooling(pooler_output=self.similarity.T[input_ids[:, 0]])


class LookUpScorer:
    """An ITM scorer reading `scores[image, caption]`; counts the pairs it scored and the calls made with
    autograd on (a scorer's graph kept for every pair fills the memory)."""

    def __init__(self, scores: torch.Tensor):
        self.scores, self.pairs, self.with_autograd = scores, 0, 0

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        self.pairs += len(inputs["input_ids"])
        self.with_autograd += torch.is_grad_enabled()
        return self.scores[inputs["visual_feats"][:, 0], inputs["input_ids"][:, 0]]


@pytest.fixture
def index_split(monkeypatch):
    """The split's inputs are the image and caption indices themselves, for hand-built scorers."""

    def encode(store, processor, image_rows, captions, device="cpu") -> EncodedSplit:
        return EncodedSplit(
            {"input_ids": torch.arange(len(captions))[:, None]},
            {"visual_feats": torch.tensor(image_rows)[:, None]},
        )

    monkeypatch.setattr(retrieval.EncodedSplit, "encode", encode)


def test_first_caption_text_retrieval_ranks_each_image_against_the_first_captions(index_split):
    score = LookUpScorer(SCORES)
    standard = evaluate_retrieval(score, None, None, IMAGES, "test", "t")
    released = evaluate_retrieval(score, None, None, IMAGES, "test", "t", text_retrieval="first_caption")
    # standard: every image's best caption (its second) ranks first
    assert standard.recalls["text_r1"] == 1.0
    # 1k x 1k: only the first captions count; image 2's ranks below image 0's
    assert released.recalls["text_r1"] == pytest.approx(2 / 3)
    # image retrieval ranks the images for every caption in both
    assert {k: v for k, v in released.recalls.items() if k.startswith("image_")} == {
        k: v for k, v in standard.recalls.items() if k.startswith("image_")
    }
    assert "first caption" in released.summary() and "every caption" in standard.summary()
    with pytest.raises(ValueError, match="text_retrieval: expected one of"):
        evaluate_retrieval(score, None, None, IMAGES, "test", "t", text_retrieval="first")


def test_reranking_orders_exactly_the_top_k_by_itm_above_the_rest_in_contrastive_order():
    similarity = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.1], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    itm = torch.tensor([[0.0, 0.5, 1.0, 0.9, 0.2, 0.8], [3.0, 2.0, 1.0, 1.0, 7.0, 1.0]])
    rescored = []

    def rescore(rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        rescored.append(set(zip(rows.tolist(), columns.tolist(), strict=True)))
        return itm[rows, columns]

    ranked = rerank(similarity, 3, rescore)
    # ITM is asked about each row's 3 most similar candidates only
    assert rescored == [{(0, 0), (0, 1), (0, 2), (1, 5), (1, 4), (1, 3)}]
    # row 0: {0, 1, 2} in ITM order, then 3, 4, 5 as the similarity has them; 3 and 5 score higher by ITM,
    # but were not among the top 3
    assert ranked[0].argsort(descending=True).tolist() == [2, 1, 0, 3, 4, 5]
    # row 1: 4 first by ITM; 5 and 3 tie by ITM and stay tied, above 2, 1, 0 in similarity order
    assert ranked[1, 5] == ranked[1, 3] and ranked[1, 4] > ranked[1, 5]
    assert ranked[1, 3] > ranked[1, 2] > ranked[1, 1] > ranked[1, 0]
    # with k covering every candidate, the order is ITM's alone
    assert torch.equal(
        rerank(similarity, 6, lambda r, c: itm[r, c]).argsort(descending=True)[0],
        itm[0].argsort(descending=True),
    )


def test_two_stage_retrieval_reranks_the_top_k_of_the_contrastive_ranking(index_split):
    score = LookUpScorer(MATCHED)
    result = evaluate_retrieval(
        score, None, None, IMAGES, "test", "t", contrastive_model=HandBuiltModel(SIMILARITY), rerank_top_k=2
    )
    # ITM scored each caption's 2 best images and each image's 2 best captions, nothing else
    assert score.pairs == 2 * (6 + 3)
    assert list(result.rankings) == ["contrastive", "reranked"] and result.headline == "reranked"
    contrastive, reranked = result.rankings["contrastive"], result.rankings["reranked"]
    assert (contrastive["image_r1"], contrastive["text_r1"]) == (pytest.approx(2 / 6), pytest.approx(2 / 3))
    # ITM lifts the right image of captions 0, 3 and 5 from second place; caption 1's was third, not
    # re-scored. Image 0's captions were outside its top 2, the other images' first place stays.
    assert (reranked["image_r1"], reranked["text_r1"]) == (pytest.approx(5 / 6), pytest.approx(2 / 3))
    assert contrastive["text_r5"] == reranked["text_r5"] == 1.0

    with_all_pairs = evaluate_retrieval(
        score,
        None,
        None,
        IMAGES,
        "test",
        "t",
        contrastive_model=HandBuiltModel(SIMILARITY),
        rerank_top_k=2,
        all_pairs=True,
    )
    assert (
        with_all_pairs.rankings["all_pairs"]["image_r1"]
        == with_all_pairs.rankings["all_pairs"]["text_r1"]
        == 1
    )
    assert with_all_pairs.headline == "all_pairs" and with_all_pairs.recalls["image_r1"] == 1.0
    assert with_all_pairs.kept()["image_r1"] == pytest.approx(5 / 6)
    metrics = with_all_pairs.metrics()
    assert metrics["reranked_image_r1"] == pytest.approx(5 / 6) and metrics["kept_text_r1"] == pytest.approx(
        2 / 3
    )
    assert metrics["contrastive_image_r1"] == pytest.approx(2 / 6) and metrics["image_r1"] == 1.0
    summary = with_all_pairs.summary().splitlines()
    assert summary[1] == (
        "  contrastive similarity (VSC embeddings, no cross-modal pass): IR 33.3 / 100.0 / 100.0 "
        "(chance 33.3 / 100.0 / 100.0)   TR 66.7 / 100.0 / 100.0 (chance 33.3 / 100.0 / 100.0)"
    )
    assert summary[2].startswith(
        "  top-2 by contrastive similarity re-ranked by ITM log-odds + VSC logit (cross-modal encoder): "
        "IR 83.3"
    )
    assert summary[3].startswith(
        "  ITM on every pair (cross-modal encoder): IR 100.0 / 100.0 / 100.0 (chance 33.3"
    )
    assert summary[4] == (
        "  share of the all-pairs recall the re-ranking keeps: IR 83.3 / 100.0 / 100.0   "
        "TR 66.7 / 100.0 / 100.0"
    )

    # k 0: no re-ranking; ITM ranks every pair
    plain = evaluate_retrieval(
        score, None, None, IMAGES, "test", "t", contrastive_model=HandBuiltModel(SIMILARITY), rerank_top_k=0
    )
    assert list(plain.rankings) == ["contrastive", "all_pairs"] and plain.rerank_top_k is None
    assert score.with_autograd == 0
    with pytest.raises(ValueError, match="rerank_top_k: expected 0"):
        evaluate_retrieval(score, None, None, IMAGES, "test", "t", rerank_top_k=-1)


def test_the_top_k_are_reranked_by_itm_plus_the_contrastive_logit(index_split):
    # images 0 and 1, captions 0-1 and 2-3. The similarity ranks every caption's image first, by 0.3 (captions
    # 0, 1) and 0.2 (captions 2, 3); ITM's log-odds prefer the other image by 1.
    similarity = torch.tensor([[0.9, 0.9, 0.3, 0.3], [0.6, 0.6, 0.5, 0.5]])
    itm = torch.tensor([[-1.0, -1, 0, 0], [0, 0, -1, -1]])
    images = IMAGES.select([0, 1])
    image_r1 = {}
    for scale in (0.0, 4.0, 10.0):
        model = HandBuiltModel(similarity, contrastive_logit_scale=scale)
        result = evaluate_retrieval(
            LookUpScorer(itm), None, None, images, "test", "t", contrastive_model=model, rerank_top_k=2
        )
        assert result.rankings["contrastive"]["image_r1"] == 1.0
        image_r1[scale] = result.rankings["reranked"]["image_r1"]
    # ITM alone gets all 4 wrong; at scale 4 the logits outweigh ITM for captions 0, 1 (0.3 x 4 > 1) only
    assert image_r1 == {0.0: 0.0, 4.0: 0.5, 10.0: 1.0}


def test_chance_recalls_by_hand():
    assert chance_recalls([2, 2, 2]) == {
        "text_r1": pytest.approx(1 - 4 / 6),  # one of 6 captions drawn: 4 of them miss
        "text_r5": 1.0,  # 5 of 6 drawn: some caption of the image is among them
        "text_r10": 1.0,
        "image_r1": pytest.approx(1 / 3),
        "image_r5": 1.0,
        "image_r10": 1.0,
    }
    # images with 1, 2 and 3 of 6 captions, 2 drawn: missed in comb(5, 2), comb(4, 2), comb(3, 2) of the
    # comb(6, 2) draws
    uneven = chance_recalls([1, 2, 3], ks=(2,))
    assert uneven["text_r2"] == pytest.approx(((15 - 10) + (15 - 6) + (15 - 3)) / 15 / 3)
    assert chance_recalls([5] * 100, "first_caption")["text_r10"] == pytest.approx(0.1)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return generate_world(tmp_path_factory.mktemp("data") / "world", WorldSettings(images=40, feature_dim=32))


@pytest.mark.parametrize("text_retrieval", ["all_captions", "first_caption"])
def test_two_stage_with_k_covering_every_candidate_is_all_pairs_scoring(world, text_retrieval):
    """A small split (4 images x 20 captions) and a tiny model with random weights: re-ranking the top 20
    re-ranks every candidate of both directions, so its recall is that of ITM log-odds + contrastive logit on
    every pair; the contrastive ranking is that of the model's embeddings."""
    torch.manual_seed(0)
    data = PretrainingData.open(world)
    config = LxmertSConfig(**TINY_MODEL, **data.model_sizes(), pretraining_tasks=["mlm", "vsc", "itm"])
    model, processor = LxmertSForPreTraining(config).eval(), data.processor(20)
    images = retrieval_split(world, "test")
    result = evaluate_retrieval(
        itm_match_scorer(model),
        data.store,
        processor,
        images,
        "test",
        "t",
        batch_size=7,
        text_retrieval=text_retrieval,
        contrastive_model=model,
        rerank_top_k=20,
        all_pairs=True,
    )
    assert (result.images, result.captions) == (4, 20)
    itm = itm_match_scorer(model)
    captions = [caption for texts in images["captions"] for caption in texts]
    split = EncodedSplit.encode(data.store, processor, images["image_index"], captions)

    def itm_plus_logit(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        text = model.get_text_features(**{name: inputs[name] for name in split.text}).pooler_output
        image = model.get_image_features(**{name: inputs[name] for name in split.visual}).pooler_output
        return itm(inputs) + model.contrastive_logit_scale * (text * image).sum(-1)

    every_pair = evaluate_retrieval(
        itm_plus_logit, data.store, processor, images, "test", "t", text_retrieval=text_retrieval
    )
    assert result.rankings["reranked"] == every_pair.rankings["all_pairs"]

    with torch.no_grad():
        image = model.get_image_features(**split.visual).pooler_output
        by_hand = image @ model.get_text_features(**split.text).pooler_output.T
    torch.testing.assert_close(contrastive_similarity(model, split, batch_size=3), by_hand)
