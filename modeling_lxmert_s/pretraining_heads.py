"""The MSP pre-training heads: one class per task, each owning its loss.

Every head checks the batch's labels for its task (`check_labels`, errors naming the label), reads the
encoder outputs (`EncoderFeatures`) and the labels, and returns a scalar loss. `HEADS` maps task names to
classes; `LxmertSForPreTraining` builds the ones that `config.pretraining_tasks` names, each under
`heads.<head_module_name(task)>`. Labels use the names in each head's `label_names`; the first name is the
task's primary label, whose presence in a batch switches the task on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN

from .configuration_lxmert_s import LxmertSConfig
from .input_checks import IGNORE_INDEX, LabelChecks


@dataclass
class EncoderFeatures:
    """What the heads read: text outputs (B, L, H), region outputs without the visual [CLS] (B, R, H), the
    pooled multimodal representation (B, H) and the two padding masks (B, L), (B, R).

    When FLM is in the batch, also its two unidirectional passes and the text's position embeddings (see
    `LxmertSUnidirectionalOutput`). When VSC or ITM_VSC is, the uni-modal embeddings the contrastive loss
    compares: the unmasked text's embeddings (B, L, H) and the regions' (B, R, H), before any cross-modal
    layer. When WPG or ITM_VSC is, `negative` holds the encoder outputs of the negative pairs the model built
    in the batch, pair n being text `negative_pairs[0][n]` with image `negative_pairs[1][n]` (row indices).
    """

    language_output: torch.Tensor
    region_output: torch.Tensor
    pooled_output: torch.Tensor
    attention_mask: torch.Tensor
    visual_attention_mask: torch.Tensor
    unidirectional_states: tuple[torch.Tensor, ...] | None = None
    position_embeddings: torch.Tensor | None = None
    text_embeddings: torch.Tensor | None = None
    region_embeddings: torch.Tensor | None = None
    negative: EncoderFeatures | None = None
    negative_pairs: tuple[torch.Tensor, torch.Tensor] | None = None


def word_region_similarity(
    language_output: torch.Tensor, region_output: torch.Tensor, visual_attention_mask: torch.Tensor
) -> torch.Tensor:
    """(B, L, R) cosine similarity of every text output with every region output; padding regions get -2,
    below any cosine, so a max or softmax over regions never picks them. The alignment pooler and WPG share
    it."""
    similarity = F.normalize(language_output, dim=-1) @ F.normalize(region_output, dim=-1).transpose(1, 2)
    return similarity.masked_fill(~visual_attention_mask.bool()[:, None, :], -2.0)


class LxmertSPredictionHeadTransform(nn.Module):
    """Dense + activation + LayerNorm before a decoder, as in BERT and LXMERT."""

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class PretrainingHead(nn.Module):
    task: ClassVar[str]
    label_names: ClassVar[tuple[str, ...]]

    def check_labels(self, labels: dict[str, torch.Tensor], checks: LabelChecks) -> None:
        """Refuse labels of the wrong shape, dtype or values, naming the label."""
        raise NotImplementedError

    def forward(self, features: EncoderFeatures, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class RegionHead(PretrainingHead):
    """A head over the regions. The released LXMERT-S code gates the transformed region outputs
    with the pooled representation (`config.gate_region_heads`); LXMERT does not."""

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.transform = LxmertSPredictionHeadTransform(config)
        self.gate = config.gate_region_heads

    def region_states(self, features: EncoderFeatures, chosen: torch.Tensor | None = None) -> torch.Tensor:
        """Transformed (and gated) region outputs: (B, R, H), or (N, H) at the `chosen` (B, R) regions
        only, so that a decoder into 2,048 features runs where a loss needs it."""
        regions = features.region_output[chosen] if chosen is not None else features.region_output
        states = self.transform(regions)
        if not self.gate:
            return states
        pooled = features.pooled_output.unsqueeze(1).expand_as(features.region_output)
        return states * (pooled[chosen] if chosen is not None else pooled)


def _zero_loss_like(tensor: torch.Tensor) -> torch.Tensor:
    """A zero that stays in the graph, for a batch in which a task selected no position: every
    parameter still receives a (zero) gradient, which data-parallel training needs."""
    return tensor.sum() * 0.0


class MaskedLanguageModelingHead(PretrainingHead):
    """MLM (MSP paper §3): cross-entropy at the masked text positions.

    In training, logits are computed for the masked positions only, never for batch x length x vocabulary
    (`logits` of every position is for inference). The decoder weight is tied to the word embeddings.
    """

    task = "mlm"
    label_names = ("mlm_labels",)

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.transform = LxmertSPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def logits(self, language_output: torch.Tensor) -> torch.Tensor:
        """(..., H) text outputs -> (..., vocab_size) word scores."""
        return self.decoder(self.transform(language_output)) + self.bias

    def check_labels(self, labels: dict[str, torch.Tensor], checks: LabelChecks) -> None:
        checks.class_ids(
            "mlm_labels",
            labels["mlm_labels"],
            checks.per_token,
            len(self.bias),
            "vocabulary",
            ignore_index=True,
        )

    def forward(self, features: EncoderFeatures, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        mlm_labels = labels["mlm_labels"]
        chosen = mlm_labels != IGNORE_INDEX
        logits = self.logits(features.language_output[chosen])
        if logits.shape[0] == 0:
            return _zero_loss_like(logits)
        return F.cross_entropy(logits.float(), mlm_labels[chosen])


def reconstructor_key_mask(
    attention_mask: torch.Tensor, corruption_rate: float = 0.0, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of the 2L pass states the reconstructor's query at each position reads, as in the FLM code.

    Returns the (B, L, 2L) key mask and `reconstructable` (B, L). The query of word i (position >= 1) reads
    the left-to-right states of words 1..i-1 and the right-to-left states of positions i+1.. (padding and the
    [CLS] states, which saw every word, left out), so word i appears in none of its keys. Other rows ([CLS],
    padding, and a word with nothing around it, as the only token after [CLS]) read every real token: they are
    not reconstructed (`reconstructable` is False) and exist only because the batch is rectangular.

    Corruption (FLM's span corruption, with rate r): a word with n keys hides k ~ Binomial(n, p) more of them,
    p = clip((r (n + 1) - 1) / n, 0, 1), so that on average a fraction r of its n + 1 tokens (itself included)
    is corrupted; k is cut to n - 1 so that one key always stays. The span holds the k positions nearest to i,
    half on each side (an odd k puts its extra position on a random side) and less where it meets an end.
    """
    valid = attention_mask.bool()
    batch, length = valid.shape
    position = torch.arange(length, device=valid.device)
    query, key = position[:, None], position[None, :]
    keys = valid[:, None, :] & (key > 0)
    before = keys & (key < query)
    after = keys & (key > query)
    count = before.sum(-1) + after.sum(-1)
    reconstructable = valid & (position > 0) & (count > 0)
    if corruption_rate > 0:
        draws = torch.rand((batch, length, length), generator=generator, device=valid.device)
        rate = ((corruption_rate * (count + 1) - 1) / count.clamp(min=1)).clamp(0, 1)
        hidden = ((draws < rate[..., None]) & (key < count[..., None])).sum(-1)
        hidden = torch.minimum(hidden, (count - 1).clamp(min=0))
        coin = torch.rand((batch, length), generator=generator, device=valid.device) < 0.5
        left = hidden // 2 + (coin & (hidden % 2 == 1)).long()
        before = before & (key < query - left[..., None])
        after = after & (key > query + (hidden - left)[..., None])
    every = valid[:, None, :].expand(batch, length, length)
    row = reconstructable[..., None]
    key_mask = torch.cat([torch.where(row, before, every), torch.where(row, after, every)], dim=-1)
    return key_mask, reconstructable


class FreeLanguageModelingHead(PretrainingHead):
    """FLM (Wang et al., "Accelerating Vision-Language Pretraining with Free Language Modeling", CVPR 2023):
    every word is a target (a 100% prediction rate, against MLM's 15%).

    The encoder's two unidirectional passes (`LxmertSModel.unidirectional_passes`) give, for each word, a
    context that has not seen it; the reconstructor (`LxmertSReconstructor`) rebuilds each word from the
    left-to-right states before it and the right-to-left states after it (`reconstructor_key_mask`), and a
    vocabulary head tied to the word embeddings predicts it. Loss: cross-entropy over every target of
    `flm_labels` (the collator marks every word; [CLS], [SEP], padding and other special tokens are -100).
    With `config.flm_directional_losses`, the FLM code's auxiliary losses are added: the left-to-right state
    of word i predicts word i + 1 and the right-to-left state predicts word i - 1; the loss is then the mean
    of the three cross-entropies (the code's weighting with both weights 1). Span corruption
    (`config.flm_corruption_rate`) applies in training only, like dropout.
    """

    task = "flm"
    label_names = ("flm_labels",)

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        # modeling_lxmert_s imports this module, so the encoder's blocks are imported when the head is built.
        from .modeling_lxmert_s import LxmertSReconstructor

        self.reconstructor = LxmertSReconstructor(config)
        self.transform = LxmertSPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.corruption_rate = config.flm_corruption_rate
        self.directional_losses = config.flm_directional_losses

    def check_labels(self, labels: dict[str, torch.Tensor], checks: LabelChecks) -> None:
        checks.class_ids(
            "flm_labels",
            labels["flm_labels"],
            checks.per_token,
            len(self.bias),
            "vocabulary",
            ignore_index=True,
        )

    def forward(self, features: EncoderFeatures, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        flm_labels = labels["flm_labels"]
        key_mask, reconstructable = reconstructor_key_mask(
            features.attention_mask, self.corruption_rate if self.training else 0.0
        )
        reconstructed = self.reconstructor(
            features.position_embeddings, features.unidirectional_states, key_mask
        )
        # (states, where to predict, words to predict) of each loss
        predictions = [(reconstructed, reconstructable & (flm_labels != IGNORE_INDEX), flm_labels)]
        if self.directional_losses:
            left_to_right, right_to_left = features.unidirectional_states[-1].chunk(2, dim=1)
            # a word's state has read one side only; the [CLS] and padding rows read every word
            one_sided = features.attention_mask.bool().clone()
            one_sided[:, 0] = False
            next_words = F.pad(flm_labels[:, 1:], (0, 1), value=IGNORE_INDEX)
            previous_words = F.pad(flm_labels[:, :-1], (1, 0), value=IGNORE_INDEX)
            predictions.append((left_to_right, one_sided & (next_words != IGNORE_INDEX), next_words))
            predictions.append((right_to_left, one_sided & (previous_words != IGNORE_INDEX), previous_words))
        # one decoder call for all of them: the vocabulary projection is the head's largest matmul
        states = torch.cat([source[where] for source, where, _ in predictions])
        logits = self.decoder(self.transform(states)) + self.bias
        if logits.shape[0] == 0:
            return _zero_loss_like(logits)
        counts = [int(where.sum()) for _, where, _ in predictions]
        losses = []
        for part, (_, where, words) in zip(logits.split(counts), predictions, strict=True):
            if part.shape[0] > 0:
                losses.append(F.cross_entropy(part.float(), words[where]))
        return torch.stack(losses).mean()


class ImageTextMatchingHead(PretrainingHead):
    """ITM (LXMERT; random negatives): match / mismatch from the pooled representation.

    Two logits with cross-entropy, as LXMERT: this equals eq. 3's binary cross-entropy with the match
    score s = softmax(logits)[1], and keeps LXMERT's `seq_relationship` weights importable. A row labelled
    -100 is no target, as in MLM; a batch without any target gives a zero loss in the graph (not the NaN of
    an empty mean).
    """

    task = "itm"
    label_names = ("itm_labels",)

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.classifier = nn.Linear(config.hidden_size, 2)

    def logits(self, pooled_output: torch.Tensor) -> torch.Tensor:
        return self.classifier(pooled_output)

    def check_labels(self, labels: dict[str, torch.Tensor], checks: LabelChecks) -> None:
        checks.class_ids(
            "itm_labels", labels["itm_labels"], checks.per_row, 2, "0 mismatch, 1 match", ignore_index=True
        )

    def forward(self, features: EncoderFeatures, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        itm_labels = labels["itm_labels"]
        # the mean over the rows with a target, without a host sync
        summed = F.cross_entropy(self.logits(features.pooled_output).float(), itm_labels, reduction="sum")
        return summed / (itm_labels != IGNORE_INDEX).sum().clamp(min=1)


class HardImageTextMatchingHead(ImageTextMatchingHead):
    """ITM_HS (§3.3, eq. 3): ITM whose negatives are hard ones, images similar to the text's. Only the data
    differs (the collator draws the negatives), so it is the same module, `heads.itm`."""

    task = "itm_hs"


class MinedImageTextMatchingHead(ImageTextMatchingHead):
    """ITM_VSC: ITM whose negatives are mined in the batch from the VSC similarities (MVP, ALBEF): the batch
    holds matched pairs only, and `LxmertSForPreTraining` encodes one negative pair per row, half a text with
    an image sampled in proportion to softmax(similarity) (a hard image), half an image with a hard text.
    Cross-entropy over the B matched and B negative pairs. The same module as ITM, `heads.itm`."""

    task = "itm_vsc"
    label_names = ("itm_labels", "image_ids")

    def check_labels(self, labels: dict[str, torch.Tensor], checks: LabelChecks) -> None:
        super().check_labels(labels, checks)
        checks.require(
            labels["itm_labels"] == 1,
            "itm_labels: itm_vsc mines its own negatives, so every row must be a matched pair (1)",
        )
        checks.row_ids("image_ids", labels["image_ids"])

    def forward(self, features: EncoderFeatures, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        matched = labels["itm_labels"]
        negative = features.negative.pooled_output
        logits = self.logits(torch.cat([features.pooled_output, negative]))
        targets = torch.cat([matched, matched.new_zeros(len(negative))])
        return F.cross_entropy(logits.float(), targets)


class VisualSemanticContrastiveHead(PretrainingHead):
    """VSC (MVP's visual-semantic contrastive loss, as CLIP): symmetric InfoNCE between text and image
    embeddings computed without cross-modal attention, with a learned temperature.

    LXMERT-S has no single-modality encoders, so the embeddings are the mean of the text's token embeddings
    and the mean of the regions' feature embeddings (the inputs of the first cross-modality layer), each
    projected and L2-normalised: no extra pass, and any text compares with any image, so retrieval ranks all
    pairs with one matrix product (docs/results.md compares this with a pass through the layers).
    `vsc_labels` (B,) name each text's image and `image_ids` (B,) the image fed in each row (store rows, say):
    text i and image j are a positive pair when they are equal, so a batch may repeat an image or hold
    mismatched rows. Each direction averages, over the rows that have a positive, -log of the softmax mass on
    the positives.
    """

    task = "vsc"
    label_names = ("vsc_labels", "image_ids")

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        dim = config.contrastive_dim or config.hidden_size
        self.text_projection = nn.Linear(config.hidden_size, dim)
        self.image_projection = nn.Linear(config.hidden_size, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.contrastive_temperature)))

    def check_labels(self, labels: dict[str, torch.Tensor], checks: LabelChecks) -> None:
        checks.row_ids("vsc_labels", labels["vsc_labels"])
        checks.row_ids("image_ids", labels["image_ids"])

    def text_embeds(self, text_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_projection(_masked_mean(text_embeddings, attention_mask)), dim=-1)

    def image_embeds(
        self, region_embeddings: torch.Tensor, visual_attention_mask: torch.Tensor
    ) -> torch.Tensor:
        return F.normalize(
            self.image_projection(_masked_mean(region_embeddings, visual_attention_mask)), dim=-1
        )

    def scale(self) -> torch.Tensor:
        """1 / temperature: what turns a cosine similarity of the embeddings into a logit. CLIP's clamp: a
        temperature below 1/100 makes the softmax one-hot and the gradients vanish."""
        return self.logit_scale.exp().clamp(max=100)

    def similarity(self, features: EncoderFeatures) -> torch.Tensor:
        """(B, B) scaled similarity of text i and image j of the batch."""
        text = self.text_embeds(features.text_embeddings, features.attention_mask)
        image = self.image_embeds(features.region_embeddings, features.visual_attention_mask)
        return self.scale() * text.float() @ image.float().T

    def forward(self, features: EncoderFeatures, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.similarity(features)
        positive = labels["vsc_labels"][:, None] == labels["image_ids"][None, :]
        return (_multi_positive_nce(logits, positive) + _multi_positive_nce(logits.T, positive.T)) / 2


def _masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(states.dtype)[..., None]
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1)


def _multi_positive_nce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Mean over the rows with a positive of -log(softmax mass on the row's positives)."""
    has_positive = positive.any(1)
    if not bool(has_positive.any()):
        return _zero_loss_like(logits)
    log_probabilities = logits.log_softmax(1)
    on_positives = torch.logsumexp(log_probabilities.masked_fill(~positive, float("-inf")), 1)
    return -on_positives[has_positive].mean()


class PhraseGroundingHead(PretrainingHead):
    """WPG (MVP's weakly-supervised phrase grounding): a word that names a concept (`wpg_concept_mask`, words
    of the detector's object and attribute names) should find a better match among its own image's regions
    than among a negative image's. Score of a word in a pair: the maximum over regions of the cosine
    similarity of its cross-modal output with the region outputs; hinge max(0, margin - score with its image +
    score with the negative image), averaged over the concept words of the negative pairs
    `LxmertSForPreTraining` encodes in the batch (the same text with another image, so the two scores differ
    only by the image)."""

    task = "wpg"
    label_names = ("wpg_concept_mask", "image_ids")

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.margin = config.grounding_margin

    def check_labels(self, labels: dict[str, torch.Tensor], checks: LabelChecks) -> None:
        checks.mask("wpg_concept_mask", labels["wpg_concept_mask"], checks.per_token)
        checks.row_ids("image_ids", labels["image_ids"])

    @staticmethod
    def word_scores(features: EncoderFeatures) -> torch.Tensor:
        """(B, L) each word's best cosine similarity with a region of its pair's image."""
        similarity = word_region_similarity(
            features.language_output, features.region_output, features.visual_attention_mask
        )
        return similarity.max(-1).values

    def forward(self, features: EncoderFeatures, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        text_index, _ = features.negative_pairs
        matched = self.word_scores(features).float()[text_index]
        negative = self.word_scores(features.negative).float()
        concept = labels["wpg_concept_mask"].bool()[text_index] & features.attention_mask.bool()[text_index]
        hinge = F.relu(self.margin - matched + negative)
        if not bool(concept.any()):
            return _zero_loss_like(hinge)
        return hinge[concept].mean()


class RegionFeatureRegressionHead(RegionHead):
    """MRFR (LXMERT): smooth-L1 to the original RoI feature, averaged over its dimensions, kept at
    masked regions, averaged over batch x regions, times `visual_loss_normalizer` (~1/0.15)."""

    task = "mrfr"
    label_names = ("mrfr_labels", "region_mask")

    def __init__(self, config: LxmertSConfig):
        super().__init__(config)
        self.decoder = nn.Linear(config.hidden_size, config.visual_feat_dim)
        self.normalizer = config.visual_loss_normalizer

    def predict(self, features: EncoderFeatures, chosen: torch.Tensor | None = None) -> torch.Tensor:
        """The predicted RoI features (B, R, F), or (N, F) at the `chosen` (B, R) regions only."""
        return self.decoder(self.region_states(features, chosen))

    def check_labels(self, labels: dict[str, torch.Tensor], checks: LabelChecks) -> None:
        features = checks.per_region.then(self.decoder.out_features, "visual_feat_dim")
        checks.features("mrfr_labels", labels["mrfr_labels"], features)
        checks.mask("region_mask", labels["region_mask"], checks.per_region)

    def forward(self, features: EncoderFeatures, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        masked = labels["region_mask"].bool()
        predicted = self.predict(features, masked).float()
        per_region = F.smooth_l1_loss(
            predicted, labels["mrfr_labels"][masked].float(), reduction="none"
        ).mean(-1)
        # unmasked regions contribute zeros to LXMERT's mean over batch x regions
        return per_region.sum() / masked.numel() * self.normalizer


class MaskedObjectClassificationHead(RegionHead):
    """MOC: the detector's object (1,600) and attribute (400) class of each region.

    As LXMERT and the LXMERT-S code: cross-entropy on every region weighted by the detector's
    confidence, averaged over batch x regions, times `visual_loss_normalizer`; object and attribute
    losses are summed. With `config.moc_masked_regions_only` the weights are also multiplied by
    `region_mask` (the paper's "masked object" wording).
    """

    task = "moc"
    label_names = (
        "moc_object_labels",
        "moc_object_confidences",
        "moc_attribute_labels",
        "moc_attribute_confidences",
    )

    def __init__(self, config: LxmertSConfig):
        super().__init__(config)
        self.object_decoder = nn.Linear(config.hidden_size, config.num_object_labels)
        self.attribute_decoder = nn.Linear(config.hidden_size, config.num_attr_labels)
        self.normalizer = config.visual_loss_normalizer
        self.masked_regions_only = config.moc_masked_regions_only

    def _weighted_loss(
        self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        per_region = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
        return (per_region * weights.flatten()).mean() * self.normalizer

    def logits(self, features: EncoderFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """Object (B, R, num_object_labels) and attribute (B, R, num_attr_labels) scores of every region."""
        states = self.region_states(features)
        return self.object_decoder(states), self.attribute_decoder(states)

    def check_labels(self, labels: dict[str, torch.Tensor], checks: LabelChecks) -> None:
        for kind, decoder in (("object", self.object_decoder), ("attribute", self.attribute_decoder)):
            checks.class_ids(
                f"moc_{kind}_labels",
                labels[f"moc_{kind}_labels"],
                checks.per_region,
                decoder.out_features,
                f"the detector's {kind} classes",
            )
            confidences = labels[f"moc_{kind}_confidences"]
            checks.scores(f"moc_{kind}_confidences", confidences, checks.per_region, "detector confidences")
        if self.masked_regions_only:
            if "region_mask" not in labels:
                raise ValueError("moc_masked_regions_only=True needs `region_mask` in the batch")
            checks.mask("region_mask", labels["region_mask"], checks.per_region)

    def forward(self, features: EncoderFeatures, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        object_logits, attribute_logits = self.logits(features)
        object_weights = labels["moc_object_confidences"].float()
        attribute_weights = labels["moc_attribute_confidences"].float()
        if self.masked_regions_only:
            masked = labels["region_mask"].float()
            object_weights, attribute_weights = object_weights * masked, attribute_weights * masked
        object_loss = self._weighted_loss(object_logits, labels["moc_object_labels"], object_weights)
        attribute_loss = self._weighted_loss(
            attribute_logits, labels["moc_attribute_labels"], attribute_weights
        )
        return object_loss + attribute_loss


class ImageFeatureShuffleHead(RegionHead):
    """IFRS (§3.1, eq. 1): at the positions of shuffled triplets, project the output to the RoI
    dimension and regress the ORIGINAL feature of that position with the squared L2 distance
    (summed over dimensions as in eq. 1), averaged over the shuffled positions."""

    task = "ifrs"
    label_names = ("ifrs_labels", "ifrs_mask")

    def __init__(self, config: LxmertSConfig):
        super().__init__(config)
        self.decoder = nn.Linear(config.hidden_size, config.visual_feat_dim)

    def check_labels(self, labels: dict[str, torch.Tensor], checks: LabelChecks) -> None:
        features = checks.per_region.then(self.decoder.out_features, "visual_feat_dim")
        checks.features("ifrs_labels", labels["ifrs_labels"], features)
        checks.mask("ifrs_mask", labels["ifrs_mask"], checks.per_region)

    def forward(self, features: EncoderFeatures, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        shuffled = labels["ifrs_mask"].bool()
        predicted = self.decoder(self.region_states(features, shuffled)).float()
        if predicted.shape[0] == 0:
            return _zero_loss_like(predicted)
        return (predicted - labels["ifrs_labels"][shuffled].float()).pow(2).sum(-1).mean()


class TopicHead(PretrainingHead):
    """TITP / TITS (§3.2 eq. 2, §3.3 eq. 4): predict the topic, (text tokens) ∩ (detected labels),
    as a multi-hot over the vocabulary from the pooled representation; binary cross-entropy averaged
    over batch x vocabulary. Layers as the released code: Linear -> GELU -> LayerNorm(vocab)."""

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.vocab_size)
        self.act = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.vocab_size, eps=config.layer_norm_eps)

    def check_labels(self, labels: dict[str, torch.Tensor], checks: LabelChecks) -> None:
        name = self.label_names[0]
        topics = checks.per_row.then(self.dense.out_features, "vocab_size")
        checks.scores(name, labels[name], topics, "multi-hot topic targets")

    def forward(self, features: EncoderFeatures, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.LayerNorm(self.act(self.dense(features.pooled_output)))
        return F.binary_cross_entropy_with_logits(logits.float(), labels[self.label_names[0]].float())


class PhraseTopicHead(TopicHead):
    task = "titp"
    label_names = ("titp_labels",)


class SentenceTopicHead(TopicHead):
    task = "tits"
    label_names = ("tits_labels",)


HEADS: dict[str, type[PretrainingHead]] = {
    head.task: head
    for head in (
        MaskedLanguageModelingHead,
        RegionFeatureRegressionHead,
        MaskedObjectClassificationHead,
        ImageTextMatchingHead,
        HardImageTextMatchingHead,
        MinedImageTextMatchingHead,
        ImageFeatureShuffleHead,
        PhraseTopicHead,
        SentenceTopicHead,
        FreeLanguageModelingHead,
        VisualSemanticContrastiveHead,
        PhraseGroundingHead,
    )
}


def _tasks_by_label() -> dict[str, tuple[str, ...]]:
    tasks: dict[str, tuple[str, ...]] = {
        "region_mask": ("moc",)
    }  # MOC reads it when restricted to masked regions
    for task, head in HEADS.items():
        for name in head.label_names:
            tasks[name] = (*tasks.get(name, ()), task)
    return tasks


LABEL_TASKS = _tasks_by_label()
