"""The alignment tasks (VSC, WPG, ITM_VSC), the in-batch negative mining and the alignment pooler: losses on
hand-computed cases, what the model encodes for the negatives, and how checkpoints load them."""

from __future__ import annotations

import math

import pytest
import torch
from model_inputs import ALIGNMENT_TASKS, alignment_labels, random_inputs, tiny_config
from torch.nn import functional as F

from modeling_lxmert_s import LxmertSForPreTraining, LxmertSModel
from modeling_lxmert_s.input_checks import LabelChecks
from modeling_lxmert_s.modeling_lxmert_s import (
    EncoderFeatures,
    MinedImageTextMatchingHead,
    PhraseGroundingHead,
    VisualSemanticContrastiveHead,
    word_region_similarity,
)


def _features(language: torch.Tensor, regions: torch.Tensor, **extra) -> EncoderFeatures:
    batch, length, hidden = language.shape
    return EncoderFeatures(
        language_output=language,
        region_output=regions,
        pooled_output=torch.zeros(batch, hidden),
        attention_mask=torch.ones(batch, length, dtype=torch.long),
        visual_attention_mask=torch.ones(batch, regions.shape[1], dtype=torch.long),
        **extra,
    )


def _identity_contrastive_head(hidden: int, temperature: float) -> VisualSemanticContrastiveHead:
    head = VisualSemanticContrastiveHead(tiny_config(hidden_size=hidden, num_attention_heads=1))
    with torch.no_grad():
        for projection in (head.text_projection, head.image_projection):
            projection.weight.copy_(torch.eye(hidden))
            projection.bias.zero_()
        head.logit_scale.fill_(math.log(1 / temperature))
    return head


def test_vsc_is_the_symmetric_infonce_of_the_mean_embeddings():
    # text i's tokens average to t_i, image j's regions to v_j; all unit vectors in the plane
    text = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 2.0], [0.0, 2.0]]])
    regions = torch.tensor([[[0.6, 0.8], [0.6, 0.8]], [[0.0, -3.0], [0.0, 1.0]]])  # means (0.6, 0.8), (0, -1)
    head = _identity_contrastive_head(hidden=2, temperature=0.5)
    features = _features(text, regions, text_embeddings=text, region_embeddings=regions)
    labels = {"vsc_labels": torch.tensor([10, 11]), "image_ids": torch.tensor([10, 11])}
    cosines = torch.tensor([[0.6, 0.0], [0.8, -1.0]])  # t_i . v_j
    logits = cosines / 0.5
    expected = (F.cross_entropy(logits, torch.arange(2)) + F.cross_entropy(logits.T, torch.arange(2))) / 2
    assert torch.allclose(head(features, labels), expected)


def test_vsc_counts_every_row_of_the_same_image_as_a_positive_and_skips_rows_without_one():
    text = torch.randn(3, 2, 4)
    regions = torch.randn(3, 5, 4)
    head = _identity_contrastive_head(hidden=4, temperature=0.1)
    features = _features(text, regions, text_embeddings=text, region_embeddings=regions)
    # rows 0 and 1 show image 7 (row 1's text is about image 7 too); row 2's text is about image 9, not fed
    labels = {"vsc_labels": torch.tensor([7, 7, 9]), "image_ids": torch.tensor([7, 7, 8])}
    logits = head.similarity(features)
    text_to_image = -torch.logsumexp(logits[:2].log_softmax(1)[:, :2], dim=1).mean()
    image_to_text = -torch.logsumexp(logits.T[:2].log_softmax(1)[:, :2], dim=1).mean()
    assert torch.allclose(head(features, labels), (text_to_image + image_to_text) / 2)


def test_wpg_is_the_hinge_between_a_concept_words_best_region_in_its_image_and_in_a_negative():
    # one text of 3 tokens, word 1 a concept; its best cosine is 1.0 with its own image, 0.9 with the negative
    language = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    own = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    other = torch.tensor([[[0.9, math.sqrt(1 - 0.81)], [-1.0, 0.0]]])
    negative = _features(language, other)
    features = _features(
        language, own, negative=negative, negative_pairs=(torch.tensor([0]), torch.tensor([1]))
    )
    concept = torch.tensor([[False, True, False]])
    head = PhraseGroundingHead(tiny_config(grounding_margin=0.2))
    loss = head(features, {"wpg_concept_mask": concept, "image_ids": torch.tensor([0])})
    assert loss.item() == pytest.approx(max(0.0, 0.2 - 1.0 + 0.9))
    # a margin already met costs nothing
    head.margin = 0.05
    assert head(features, {"wpg_concept_mask": concept, "image_ids": torch.tensor([0])}).item() == 0.0


def test_word_region_similarity_never_picks_a_padding_region():
    language = torch.tensor([[[1.0, 0.0]]])
    regions = torch.tensor([[[-1.0, 0.0], [1.0, 0.0]]])
    similarity = word_region_similarity(language, regions, torch.tensor([[1, 0]]))
    assert similarity[0, 0].tolist() == pytest.approx([-1.0, -2.0])


def test_itm_vsc_scores_the_matched_rows_as_1_and_the_encoded_negatives_as_0():
    head = MinedImageTextMatchingHead(tiny_config())
    pooled = torch.randn(2, 16)
    negative = _features(torch.zeros(3, 1, 16), torch.zeros(3, 1, 16))
    negative.pooled_output = torch.randn(3, 16)
    features = _features(torch.zeros(2, 1, 16), torch.zeros(2, 1, 16), negative=negative)
    features.pooled_output = pooled
    loss = head(features, {"itm_labels": torch.ones(2, dtype=torch.long), "image_ids": torch.arange(2)})
    logits = head.classifier(torch.cat([pooled, negative.pooled_output]))
    assert torch.allclose(loss, F.cross_entropy(logits, torch.tensor([1, 1, 0, 0, 0])))
    checks = LabelChecks(batch=2, length=1, regions=1)
    with pytest.raises(RuntimeError, match="^itm_labels: itm_vsc mines its own negatives.*matched pair"):
        head.check_labels({"itm_labels": torch.tensor([1, 0]), "image_ids": torch.arange(2)}, checks)


def test_negative_mining_samples_hard_partners_of_other_images_only():
    model = LxmertSForPreTraining(tiny_config(pretraining_tasks=ALIGNMENT_TASKS)).eval()
    image_ids = torch.tensor([0, 1, 2, 2, 3, 4])
    # text i is by far closest to image (i + 1) % 6, which for rows 1 and 2 is the other row of image 2 ...
    similarity = torch.full((6, 6), -50.0)
    similarity[torch.arange(6), (torch.arange(6) + 1) % 6] = 50.0
    model.heads["vsc"].similarity = lambda features: similarity
    features = _features(torch.zeros(6, 1, 16), torch.zeros(6, 1, 16), text_embeddings=torch.zeros(6, 1, 16))
    torch.manual_seed(0)
    texts, images = model._negative_pairs(features, image_ids)
    # first half (rows 0-2) keep their text and take the hardest image, second half keep their image and take
    # the hardest text (row i - 1) ...
    assert texts[:3].tolist() == [0, 1, 2] and images[3:].tolist() == [3, 4, 5]
    assert images[:2].tolist() == [1, 2] and texts[4:].tolist() == [3, 4]
    # ... but never one of the same image: row 2's hardest image and row 3's hardest text show image 2, like
    # the rows themselves, so their partners come from the other images
    assert images[2].item() in (0, 1, 4, 5) and texts[3].item() in (0, 1, 4, 5)
    assert (image_ids[texts] != image_ids[images]).all()
    # rows with no other image in the batch get no negative pair
    texts, images = model._negative_pairs(features, torch.tensor([5, 5, 5, 6, 6, 6]))
    assert (torch.tensor([5, 5, 5, 6, 6, 6])[texts] != torch.tensor([5, 5, 5, 6, 6, 6])[images]).all()
    texts, images = model._negative_pairs(features, torch.zeros(6, dtype=torch.long))
    assert len(texts) == len(images) == 0


def test_the_model_encodes_each_negative_pair_as_its_text_with_its_image():
    config = tiny_config(
        pretraining_tasks=ALIGNMENT_TASKS, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    model = LxmertSForPreTraining(config).eval()
    inputs = random_inputs(config, batch=4)
    labels = alignment_labels(inputs)
    captured = {}
    original = model._negative_pairs

    def record(features, image_ids):
        captured["pairs"] = original(features, image_ids)
        return captured["pairs"]

    model._negative_pairs = record
    with torch.no_grad():
        output = model(**inputs, **labels)
    texts, images = captured["pairs"]
    assert set(output.losses) == set(ALIGNMENT_TASKS)
    pair = {
        name: value[texts]
        for name, value in inputs.items()
        if name in ("input_ids", "attention_mask", "position_ids")
    }
    pair |= {name: value[images] for name, value in inputs.items() if name.startswith("visual")}
    with torch.no_grad():
        direct = model.lxmert(**{**pair, "input_ids": pair["input_ids"]}).pooled_output
    # the ITM_VSC loss is the cross-entropy of the matched rows as 1 and exactly these pairs as 0
    itm = model.heads["itm"]
    with torch.no_grad():
        matched = model.lxmert(**inputs).pooled_output
        expected = F.cross_entropy(
            itm.logits(torch.cat([matched, direct])),
            torch.cat([torch.ones(4), torch.zeros(len(texts))]).long(),
        )
    # MLM masks the text the negatives read too; this batch's masked positions are given as labels only
    assert output.losses["itm_vsc"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_vsc_reads_the_text_before_mlm_masked_it():
    config = tiny_config(pretraining_tasks=["mlm", "vsc"])
    model = LxmertSForPreTraining(config).eval()
    inputs = random_inputs(config)
    original = inputs["input_ids"].clone()
    mlm_labels = torch.full_like(original, -100)
    mlm_labels[:, 1] = original[:, 1]
    masked = original.clone()
    masked[:, 1] = 3
    labels = {"vsc_labels": torch.arange(3), "image_ids": torch.arange(3)}
    with torch.no_grad():
        from_masked = model(**{**inputs, "input_ids": masked}, mlm_labels=mlm_labels, **labels).losses["vsc"]
        from_original = model(**inputs, **labels).losses["vsc"]
    assert from_masked.item() == pytest.approx(from_original.item(), rel=1e-6)


def test_vsc_reads_the_regions_before_mrfr_corrupted_them():
    config = tiny_config(pretraining_tasks=["mrfr", "vsc"])
    model = LxmertSForPreTraining(config).eval()
    inputs = random_inputs(config)
    clean = inputs["visual_feats"]
    corrupted = clean.clone()
    corrupted[:, 1] = 0.0
    labels = {"vsc_labels": torch.arange(3), "image_ids": torch.arange(3)}
    with torch.no_grad():
        from_clean = model(**inputs, **labels).losses["vsc"]
        given_clean = model(**{**inputs, "visual_feats": corrupted}, vsc_visual_feats=clean, **labels)
        from_corrupted = model(**{**inputs, "visual_feats": corrupted}, **labels).losses["vsc"]
    assert given_clean.losses["vsc"].item() == pytest.approx(from_clean.item(), rel=1e-6)
    assert from_corrupted.item() != pytest.approx(from_clean.item(), rel=1e-3)
    with pytest.raises(ValueError, match="vsc_visual_feats"):
        model(**inputs, vsc_visual_feats=clean[:, :, :-1], **labels)


def test_text_and_image_features_are_the_vsc_embeddings():
    config = tiny_config(pretraining_tasks=ALIGNMENT_TASKS)
    model = LxmertSForPreTraining(config).eval()
    inputs = random_inputs(config)
    with torch.no_grad():
        text = model.get_text_features(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            position_ids=inputs["position_ids"],
        ).pooler_output
        image = model.get_image_features(
            visual_feats=inputs["visual_feats"],
            visual_pos=inputs["visual_pos"],
            visual_attention_mask=inputs["visual_attention_mask"],
        ).pooler_output
        embeddings = model.lxmert.embeddings(
            inputs["input_ids"], torch.zeros_like(inputs["input_ids"]), inputs["position_ids"]
        )
        mask = inputs["attention_mask"][..., None].float()
        expected_text = F.normalize(
            model.heads["vsc"].text_projection((embeddings * mask).sum(1) / mask.sum(1)), dim=-1
        )
    assert torch.allclose(text, expected_text, atol=1e-6)
    assert torch.allclose(text.norm(dim=-1), torch.ones(3)) and torch.allclose(
        image.norm(dim=-1), torch.ones(3)
    )
    with pytest.raises(ValueError, match="VSC head"):
        LxmertSForPreTraining(tiny_config(pretraining_tasks=["mlm"])).get_text_features(inputs["input_ids"])


def test_a_vsc_head_added_to_a_checkpoint_starts_at_the_configured_temperature(tmp_path):
    LxmertSForPreTraining(tiny_config(pretraining_tasks=["mlm"])).save_pretrained(tmp_path)
    model = LxmertSForPreTraining.from_pretrained(tmp_path, pretraining_tasks=ALIGNMENT_TASKS)
    assert model.heads["vsc"].logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert torch.isfinite(model.heads["vsc"].text_projection.weight).all()


def test_the_alignment_pooler_reads_each_words_match_with_the_regions():
    config = tiny_config(pooler_type="alignment", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = LxmertSModel(config).eval()
    inputs = random_inputs(config)
    with torch.no_grad():
        output = model(**inputs)
        pooler = model.pooler
        regions = output.vision_output[:, 1:]
        similarity = F.normalize(output.language_output, dim=-1) @ F.normalize(regions, dim=-1).transpose(
            1, 2
        )
        similarity = similarity.masked_fill(~inputs["visual_attention_mask"].bool()[:, None], -2.0)
        found = torch.softmax(similarity / config.alignment_temperature, -1) @ regions
        words = inputs["attention_mask"].bool() & (torch.arange(8) > 0)
        beta = pooler.word_weight(output.language_output).squeeze(-1).masked_fill(~words, -1e9).softmax(-1)
        match = (beta * similarity.max(-1).values).sum(1, keepdim=True)
        expected = torch.tanh(
            pooler.dense(
                torch.cat(
                    [
                        (beta[..., None] * output.language_output).sum(1),
                        (beta[..., None] * found).sum(1),
                        5.0 * match,
                    ],
                    -1,
                )
            )
        )
    assert torch.allclose(output.pooled_output, expected, atol=1e-6)
    assert model.visual_pooler is None  # the alignment pooler replaces the product of the two [CLS] poolers


def test_a_vsc_scale_past_100_is_clamped_and_still_learns():
    """CLIP clamps the parameter: a clamp of the value alone gives no gradient once the scale passes 100."""
    head = _identity_contrastive_head(hidden=2, temperature=0.5)
    with torch.no_grad():
        head.logit_scale.fill_(math.log(150.0))
    text = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    regions = torch.tensor([[[0.8, 0.6]], [[0.6, 0.8]]])
    features = _features(text, regions, text_embeddings=text, region_embeddings=regions)
    loss = head(features, {"vsc_labels": torch.tensor([0, 1]), "image_ids": torch.tensor([0, 1])})
    loss.backward()
    assert head.logit_scale.item() == pytest.approx(math.log(100.0))
    assert head.logit_scale.grad is not None and head.logit_scale.grad.abs() > 0
