"""LXMERT-S: LXMERT's cross-modality encoder alone (Liu et al., ACL 2021, §3, Fig. 2).

Text embeddings and projected region features enter `num_layers` cross-modality layers directly.
Module names follow `transformers`' LXMERT (`encoder.visn_fc`, `encoder.x_layers.N.visual_attention`,
...) so that LXMERT checkpoints map onto this model by key, see `convert_lxmert.py`. Attention goes
through transformers' attention interface: SDPA by default, eager on request, and eager for a call that asks
for the attention weights (`output_attentions=True`), which SDPA does not return.

Read top to bottom, as BERT's modeling file: the encoder's blocks, FLM's reconstructor, the poolers, the
pre-training heads, the task registry `PRETRAINING_TASKS` (a task = its head + its collator piece + one
registry line), then the models: `LxmertSPreTrainedModel`, `LxmertSModel`, `LxmertSForPreTraining` and the
downstream task models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, logging

from .configuration_lxmert_s import LxmertSConfig
from .input_checks import IGNORE_INDEX, LabelChecks, Shape, ValueChecks, check_dtype, check_shape, shape_error
from .pretraining_pieces import (
    PretrainingBatch,
    contrastive_piece,
    free_language_modeling_piece,
    grounding_piece,
    hard_negatives_piece,
    masked_language_modeling_piece,
    matched_pairs_piece,
    object_classification_piece,
    phrase_topic_piece,
    random_negatives_piece,
    region_regression_piece,
    relation_pointing_piece,
    sentence_topic_piece,
    shuffle_piece,
    tag_piece,
    word_box_piece,
)

logger = logging.get_logger(__name__)

# The released code's visual [CLS] covers the whole image.
VISUAL_CLS_BOX = (0.0, 0.0, 1.0, 1.0)
# What a word reads of each region's place with `text_reads_boxes` (`LxmertSEncoder.region_boxes`).
BOX_READOUT = ("centre x", "centre y", "width", "height")


def box_centres_and_sizes(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 4) boxes (x1, y1, x2, y2) -> their (..., 2) centres and (..., 2) widths and heights."""
    return (boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]


@dataclass
class LxmertSModelOutput(ModelOutput):
    """Named as transformers' `LxmertModelOutput`.

    language_output: (B, L, H). vision_output: (B, R', H) with R' = R + 1 when the model prepends its
    visual [CLS] (then at index 0). pooled_output: (B, H), the multimodal representation every head
    reads. Hidden states: the embeddings, then each layer's output. Attentions (from eager attention, which
    a call asking for them runs under SDPA too): per layer, text self-attention, region self-attention, and
    text-to-region cross-attention. relation_weights: (B, R) with `alignment_relations`, which regions (not
    the visual [CLS]) the relation readout picked (`LxmertSRelationReadout`).
    """

    language_output: torch.Tensor | None = None
    vision_output: torch.Tensor | None = None
    pooled_output: torch.Tensor | None = None
    language_hidden_states: tuple[torch.Tensor, ...] | None = None
    vision_hidden_states: tuple[torch.Tensor, ...] | None = None
    language_attentions: tuple[torch.Tensor, ...] | None = None
    vision_attentions: tuple[torch.Tensor, ...] | None = None
    cross_encoder_attentions: tuple[torch.Tensor, ...] | None = None
    relation_weights: torch.Tensor | None = None


@dataclass
class LxmertSUnidirectionalOutput(ModelOutput):
    """FLM's two unidirectional passes over the text (`LxmertSModel.unidirectional_passes`).

    hidden_states: each layer's text output (B, 2L, H), the left-to-right pass at [0, L) and the
    right-to-left pass at [L, 2L). position_embeddings: (B, L, H), the text's position embeddings, where
    the reconstructor's queries stand. attention_mask: (B, L), the text's padding mask.
    """

    hidden_states: tuple[torch.Tensor, ...] | None = None
    position_embeddings: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None


@dataclass
class LxmertSForPreTrainingOutput(ModelOutput):
    """Named after transformers' `LxmertForPreTrainingOutput` where the two share a field.

    loss: the weighted sum of the active tasks' losses; losses: task name -> its unweighted loss, for the
    tasks active in this batch (both None when no task's labels were given). itm_logits: (B, 2)
    mismatch/match scores when the model carries the ITM head. The predictions, at every position, of the
    heads the model carries, computed when no labels are given or `output_predictions=True` (training
    computes them at the chosen positions only): prediction_logits (B, L, vocab_size), MLM's word scores;
    object_logits (B, R, num_object_labels) and attribute_logits (B, R, num_attr_labels), MOC's
    detector-class scores; region_feature_predictions (B, R, visual_feat_dim), MRFR's RoI features (R: the
    regions, without the visual [CLS]); word_box_predictions (B, L, 4), WBR's box centre x, y, width and
    height of the region each word names.
    Then the encoder's outputs, as `LxmertSModelOutput`."""

    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None
    prediction_logits: torch.Tensor | None = None
    itm_logits: torch.Tensor | None = None
    object_logits: torch.Tensor | None = None
    attribute_logits: torch.Tensor | None = None
    region_feature_predictions: torch.Tensor | None = None
    word_box_predictions: torch.Tensor | None = None
    language_output: torch.Tensor | None = None
    vision_output: torch.Tensor | None = None
    pooled_output: torch.Tensor | None = None
    language_hidden_states: tuple[torch.Tensor, ...] | None = None
    vision_hidden_states: tuple[torch.Tensor, ...] | None = None
    language_attentions: tuple[torch.Tensor, ...] | None = None
    vision_attentions: tuple[torch.Tensor, ...] | None = None
    cross_encoder_attentions: tuple[torch.Tensor, ...] | None = None
    relation_weights: torch.Tensor | None = None


@dataclass
class LxmertSTaskOutput(ModelOutput):
    """What every downstream model returns. The scores are `logits`, as in transformers' task outputs
    (not LXMERT's `question_answering_score`), so code written against those reads them unchanged.

    loss: the task loss when `labels` were given. logits: (B, num_qa_labels) answer scores
    (`LxmertSForQuestionAnswering`), (B, 2) false/true (`LxmertSForVisualReasoning`) or (B,) match
    scores (`LxmertSForImageTextRetrieval`). The encoder's hidden states and attentions as in
    `LxmertSModelOutput`; for NLVR2 over its 2B (sentence, image) rows, image-major per example.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    language_hidden_states: tuple[torch.Tensor, ...] | None = None
    vision_hidden_states: tuple[torch.Tensor, ...] | None = None
    language_attentions: tuple[torch.Tensor, ...] | None = None
    vision_attentions: tuple[torch.Tensor, ...] | None = None
    cross_encoder_attentions: tuple[torch.Tensor, ...] | None = None


class LxmertSEmbeddings(nn.Module):
    """BERT's word + position + token-type embeddings. Position and token-type row 0 are padding
    rows (zero and frozen) as in LXMERT; the reference code's word-level positions give padding 0."""

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=0
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size, padding_idx=0)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor:
        embeddings = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(embeddings))


class LxmertSVisualFeatureEncoder(nn.Module):
    """RoI features -> Linear + LayerNorm; boxes -> Linear + LayerNorm; averaged, then dropout.

    With `config.visual_cls_token` a learned feature with box [0, 0, 1, 1] is prepended first. The
    released code keeps it as one used row of a vocabulary-sized table; one vector is the same function.
    Features and boxes of another floating dtype (float64 from numpy, float16 from a feature store) are cast
    to the weights' dtype, as transformers' vision models cast `pixel_values`.
    """

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.visn_fc = nn.Linear(config.visual_feat_dim, config.hidden_size)
        self.visn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.box_fc = nn.Linear(config.visual_pos_dim, config.hidden_size)
        self.box_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        if config.visual_cls_token:
            self.visual_cls_feature = nn.Parameter(torch.zeros(config.visual_feat_dim))
            self.register_buffer("visual_cls_box", torch.tensor(VISUAL_CLS_BOX), persistent=False)
        else:
            self.visual_cls_feature = None

    def forward(self, visual_feats: torch.Tensor, visual_pos: torch.Tensor) -> torch.Tensor:
        dtype = self.visn_fc.weight.dtype
        visual_feats, visual_pos = visual_feats.to(dtype), visual_pos.to(dtype)
        if self.visual_cls_feature is not None:
            batch_size = visual_feats.shape[0]
            cls_feature = self.visual_cls_feature.to(visual_feats.dtype).expand(batch_size, 1, -1)
            cls_box = self.visual_cls_box.to(visual_pos.dtype).expand(batch_size, 1, -1)
            visual_feats = torch.cat([cls_feature, visual_feats], dim=1)
            visual_pos = torch.cat([cls_box, visual_pos], dim=1)
        features = self.visn_layer_norm(self.visn_fc(visual_feats))
        boxes = self.box_layer_norm(self.box_fc(visual_pos))
        return self.dropout((features + boxes) / 2)


def text_defaults(
    input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, position_ids: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`token_type_ids` and `position_ids` as given, else segment 0 and absolute positions."""
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    if position_ids is None:
        position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    return token_type_ids, position_ids


def visual_mask_or_ones(
    visual_feats: torch.Tensor, visual_attention_mask: torch.Tensor | None
) -> torch.Tensor:
    """The regions' padding mask as given, else every region real."""
    if visual_attention_mask is None:
        return torch.ones(visual_feats.shape[:2], dtype=torch.long, device=visual_feats.device)
    return visual_attention_mask


def additive_mask(mask: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(B, K) or (B, Q, K) 1/0 -> (B, 1, 1, K) or (B, 1, Q, K) additive mask in the dtype attention runs in
    (bf16 under autocast, where float32's minimum would round to -inf)."""
    device_type = reference.device.type
    dtype = (
        torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else reference.dtype
    )
    expanded = mask[:, None, None, :] if mask.dim() == 2 else mask[:, None]
    return (1.0 - expanded.to(dtype)) * torch.finfo(dtype).min


def unidirectional_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) padding mask -> (B, 2L, 2L) text self-attention mask of FLM's two passes run as one sequence.

    The left-to-right copy of the text is at [0, L), the right-to-left copy at [L, 2L), and neither sees
    the other. As in the FLM code, a word (position >= 1) of the left-to-right pass sees the tokens up to
    itself and one of the right-to-left pass the tokens from itself on; the [CLS] row sees every word, but no
    word sees the [CLS], which would hand it the words of the other side. Padding rows see every real token:
    their outputs are never read, and a row with no key would break the softmax.
    """
    valid = attention_mask.bool()
    position = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    word_row = (valid & (position > 0))[:, :, None]
    keys = valid[:, None, :]
    up_to_query = position[None, :] <= position[:, None]
    left_to_right = torch.where(word_row, up_to_query & (position > 0), True) & keys
    right_to_left = torch.where(word_row, up_to_query.T, True) & keys
    unseen = torch.zeros_like(left_to_right)
    return torch.cat(
        [torch.cat([left_to_right, unseen], dim=2), torch.cat([unseen, right_to_left], dim=2)], dim=1
    )


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = nn.functional.softmax(scores, dim=-1)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class LxmertSAttention(nn.Module):
    """Multi-head attention of `hidden_states` over `context` (itself for self-attention)."""

    is_causal = False

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.config = config
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None,
        output_attentions: bool = False,
        context_boxes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Returns the attended values (B, L, H), the weights when asked for, and, given `context_boxes`
        (B, K, D), each head's attention-weighted mean of them (B, L, heads * D): they ride along as extra
        value dimensions, so the same weights (dropout included) read them in the same call."""
        query = self.query(hidden_states).unflatten(-1, (-1, self.head_dim)).transpose(1, 2)
        key = self.key(context).unflatten(-1, (-1, self.head_dim)).transpose(1, 2)
        value = self.value(context).unflatten(-1, (-1, self.head_dim)).transpose(1, 2)
        if context_boxes is not None:
            boxes = context_boxes.to(value.dtype)[:, None].expand(-1, value.shape[1], -1, -1)
            value = torch.cat([value, boxes], dim=-1)
        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            implementation, eager_attention_forward
        )
        output, weights = attention_interface(
            self,
            query,
            key,
            value,
            context_mask,
            dropout=self.dropout.p if self.training else 0.0,
            scaling=self.scaling,
        )
        if context_boxes is None:
            return output.flatten(-2), weights, None
        attended, where = output.split([self.head_dim, context_boxes.shape[-1]], dim=-1)
        return attended.flatten(-2), weights, where.flatten(-2)


class ZeroStartLinear(nn.Linear):
    """A linear layer that `_init_weights` starts at zero: an added path (a bias on the attention, a box
    readout) that leaves the model as it was at initialisation and learns from there."""


class RandomFeatureLinear(nn.Linear):
    """A Linear that starts at PyTorch's scale (uniform in +-1/sqrt(in_features)), not BERT's 0.02: the
    random features of a few box coordinates, which at 0.02 are ~1e-4 of what they are added to.
    `LxmertSPreTrainedModel._init_weights` sets them, before transformers' default would."""


class LxmertSAttentionOutput(nn.Module):
    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class LxmertSCrossAttentionLayer(nn.Module):
    """Cross-attention sub-layer; one instance serves both directions (text->regions, regions->text).

    With `reads_boxes` (a cross-modality layer's, when `config.text_reads_boxes`; not in LXMERT-S) a word also
    gets where it looked: each head's attention-weighted mean of the regions' boxes
    (`LxmertSEncoder.region_boxes`), projected and added to what it read. In LXMERT a box reaches a word only
    inside a region's value, and there it does not survive: a linear probe finds each region's place in its
    states at every layer and none in the states of the words that name it, so no word can compare two
    objects' places (docs/results.md, "Grounding beyond a bag of objects", item 5, which also measures that
    this path alone does not make the words keep it). The projection starts at zero: at initialisation the
    layer is LXMERT's."""

    def __init__(self, config: LxmertSConfig, reads_boxes: bool = False):
        super().__init__()
        self.att = LxmertSAttention(config)
        self.output = LxmertSAttentionOutput(config)
        self.box_readout = (
            ZeroStartLinear(config.num_attention_heads * len(BOX_READOUT), config.hidden_size)
            if reads_boxes
            else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None,
        output_attentions: bool = False,
        context_boxes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`context_boxes`: (B, K, 4) the context's boxes as `LxmertSEncoder.region_boxes` gives them, for the
        text's queries (None, or a layer without `reads_boxes`: LXMERT's attention)."""
        if self.box_readout is None:
            context_boxes = None
        attended, weights, where = self.att(
            hidden_states, context, context_mask, output_attentions, context_boxes
        )
        if where is not None:
            attended = attended + self.box_readout(where)
        return self.output(attended, hidden_states), weights


class LxmertSSelfAttentionLayer(nn.Module):
    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.self = LxmertSAttention(config)
        self.output = LxmertSAttentionOutput(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights, _ = self.self(hidden_states, hidden_states, attention_mask, output_attentions)
        return self.output(attended, hidden_states), weights


class LxmertSIntermediate(nn.Module):
    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class LxmertSOutput(nn.Module):
    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class LxmertSCrossModalityLayer(GradientCheckpointingLayer):
    """One cross-modality layer: shared bi-directional cross-attention, then per-stream
    self-attention, then per-stream FFN; each sub-layer with residual + LayerNorm."""

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.visual_attention = LxmertSCrossAttentionLayer(config, reads_boxes=config.text_reads_boxes)
        self.lang_self_att = LxmertSSelfAttentionLayer(config)
        self.visn_self_att = LxmertSSelfAttentionLayer(config)
        self.lang_inter = LxmertSIntermediate(config)
        self.lang_output = LxmertSOutput(config)
        self.visn_inter = LxmertSIntermediate(config)
        self.visn_output = LxmertSOutput(config)

    def forward(
        self,
        lang_feats: torch.Tensor,
        lang_mask: torch.Tensor | None,
        visual_feats: torch.Tensor,
        visual_mask: torch.Tensor | None,
        vision_sees_language: bool = True,
        output_attentions: bool = False,
        visual_self_mask: torch.Tensor | None = None,
        visual_boxes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """`vision_sees_language=False` (FLM's unidirectional passes): the regions' cross-attention reads the
        regions instead of the text, so the image side carries no word to a word that must not see it.
        `output_attentions`: return the weights of text self-, region self- and text-to-region attention.
        `visual_self_mask`: the region self-attention's additive mask when it differs from `visual_mask`
        (with `LxmertSRegionGeometry`'s bias). `visual_boxes`: what the words read of the regions' places
        (`LxmertSEncoder.region_boxes`, with `text_reads_boxes`)."""
        lang_cross, cross_weights = self.visual_attention(
            lang_feats, visual_feats, visual_mask, output_attentions, visual_boxes
        )
        if vision_sees_language:
            visual_cross, _ = self.visual_attention(visual_feats, lang_feats, lang_mask)
        else:
            visual_cross, _ = self.visual_attention(visual_feats, visual_feats, visual_mask)
        lang_self, lang_weights = self.lang_self_att(lang_cross, lang_mask, output_attentions)
        visual_self, visual_weights = self.visn_self_att(
            visual_cross, visual_mask if visual_self_mask is None else visual_self_mask, output_attentions
        )
        lang_out = self.lang_output(self.lang_inter(lang_self), lang_self)
        visual_out = self.visn_output(self.visn_inter(visual_self), visual_self)
        return lang_out, visual_out, lang_weights, visual_weights, cross_weights


class LxmertSRegionGeometry(nn.Module):
    """Relation-aware region self-attention (`config.visual_geometry_bias`, not in LXMERT-S): each head's
    attention from region i to region j gets a bias learned from their relative geometry, the offset of j's
    box centre from i's and the log ratios of their widths and heights (as relation networks for detection
    do).

    Absolute box embeddings let a query prefer regions at a place, not regions placed relative to itself:
    "what is left of the dog" needs the second. The bias is shared by the layers; its last layer starts at
    zero, so that at initialisation the attention is the plain one."""

    HIDDEN = 32

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.encode = nn.Linear(4, self.HIDDEN)
        self.activation = nn.ReLU()
        self.bias = ZeroStartLinear(self.HIDDEN, config.num_attention_heads)

    def forward(self, boxes: torch.Tensor) -> torch.Tensor:
        """(B, R, 4) boxes (x1, y1, x2, y2) -> (B, heads, R, R) attention bias, query region first."""
        boxes = boxes.float()
        centre, size = box_centres_and_sizes(boxes)
        size = size.clamp(min=1e-3)
        offset = centre[:, None, :, :] - centre[:, :, None, :]
        ratio = torch.log(size[:, None, :, :] / size[:, :, None, :])
        bias = self.bias(self.activation(self.encode(torch.cat([offset, ratio], dim=-1))))
        return bias.permute(0, 3, 1, 2)


class LxmertSEncoder(nn.Module):
    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.visn_fc = LxmertSVisualFeatureEncoder(config)
        self.x_layers = nn.ModuleList(LxmertSCrossModalityLayer(config) for _ in range(config.num_layers))
        self.region_geometry = LxmertSRegionGeometry(config) if config.visual_geometry_bias else None
        self.config = config

    def _boxes(self, visual_pos: torch.Tensor) -> torch.Tensor:
        """The regions' boxes as the encoder's region states are laid out: the visual [CLS], when there is
        one, covers the whole image."""
        if self.visn_fc.visual_cls_feature is None:
            return visual_pos
        whole = self.visn_fc.visual_cls_box.to(visual_pos.dtype).expand(len(visual_pos), 1, -1)
        return torch.cat([whole, visual_pos], dim=1)

    def region_self_mask(self, visual_mask: torch.Tensor, visual_pos: torch.Tensor) -> torch.Tensor | None:
        """The region self-attention's additive mask: `visual_mask` plus the geometry bias (None without it).
        `visual_pos` are the regions' boxes."""
        if self.region_geometry is None:
            return None
        return visual_mask + self.region_geometry(self._boxes(visual_pos)).to(visual_mask.dtype)

    def region_boxes(self, visual_pos: torch.Tensor) -> torch.Tensor | None:
        """(B, R', 4) what a word reads of the regions' places with `text_reads_boxes` (None without it):
        each box's centre and size (`BOX_READOUT`), from (x1, y1, x2, y2) in [0, 1]."""
        if not self.config.text_reads_boxes:
            return None
        return torch.cat(box_centres_and_sizes(self._boxes(visual_pos)[..., :4].float()), dim=-1)


class LxmertSReconstructorLayer(nn.Module):
    """One layer of FLM's reconstructor: cross-attention from the queries to the two passes, then a
    feed-forward block. No self-attention: a query would read the context of another target, which may
    hold this target's word."""

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.cross_attention = LxmertSCrossAttentionLayer(config)
        self.intermediate = LxmertSIntermediate(config)
        self.output = LxmertSOutput(config)

    def forward(
        self, queries: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor
    ) -> torch.Tensor:
        attended, _ = self.cross_attention(queries, context, context_mask)
        return self.output(self.intermediate(attended), attended)


class LxmertSReconstructor(nn.Module):
    """FLM's reconstructor (Wang et al., "Accelerating Vision-Language Pretraining with Free Language
    Modeling", CVPR 2023): the query of position i is a learned mask embedding plus i's position embedding;
    layer t reads the unidirectional passes after encoder layer `num_layers - depth + t` (the FLM code's
    top reconstructor layers) through a (B, L, 2L) key mask."""

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.mask_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layers = nn.ModuleList(
            LxmertSReconstructorLayer(config) for _ in range(config.flm_reconstructor_layers)
        )

    def forward(
        self,
        position_embeddings: torch.Tensor,
        pass_states: tuple[torch.Tensor, ...],
        key_mask: torch.Tensor,
    ) -> torch.Tensor:
        queries = self.dropout(self.LayerNorm(position_embeddings + self.mask_embedding))
        context_mask = additive_mask(key_mask, queries)
        for layer, context in zip(self.layers, pass_states[-len(self.layers) :], strict=True):
            queries = layer(queries, context, context_mask)
        return queries


def word_region_similarity(
    language_output: torch.Tensor, region_output: torch.Tensor, visual_attention_mask: torch.Tensor
) -> torch.Tensor:
    """(B, L, R) cosine similarity of every text output with every region output; padding regions get -2,
    below any cosine, so a max or softmax over regions never picks them. The alignment pooler and WPG share
    it."""
    similarity = F.normalize(language_output, dim=-1) @ F.normalize(region_output, dim=-1).transpose(1, 2)
    return similarity.masked_fill(~visual_attention_mask.bool()[:, None, :], -2.0)


class LxmertSPooler(nn.Module):
    """Dense + tanh on the first position of a stream."""

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


def word_weights(
    layer: nn.Linear, language_output: torch.Tensor, words: torch.Tensor, prior: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """(B, L) float32 softmax over the `words` (B, L) of `layer`'s score of each word's state plus `prior`
    (B, L); all zeros in a row without words. The alignment pooler and the relation readout pool words so."""
    scores = (layer(language_output).squeeze(-1).float() + prior).masked_fill(~words, float("-inf"))
    return torch.softmax(scores, dim=-1).nan_to_num(0.0)


class LxmertSRelationReadout(nn.Module):
    """The region where the text points relative to the object it names (`config.alignment_relations`, not
    in LXMERT-S), read by the alignment pooler.

    Every region's state holds its box, and no word's state holds the box of the object it names (the
    position probe, docs/results.md): a word finds *which* region it names, not where it is, so nothing can
    compare two places. This readout compares them where the boxes are exact. The reference place is
    p = sum_w rho_w b_w, b_w = softmax(s_w / `alignment_temperature`) @ boxes, the box each word found
    (centre and size), rho = softmax_w(u . h_w + max_r s_wr / `alignment_temperature`) picking the words that
    name the reference ("the cup"): a word that names a region matches it best, so the reference starts on
    the object words, and u learns which of them (in a fine-tuned VQA model without the match term the
    weights sat on the relation word and the place was no object's). Each region gets its place relative to
    it, g_r = MLP(centre_r - centre_p, log(size_r / size_p)), and a query pooled from the words (its own
    weights: "left of") scores it, a_r = softmax_r(q . (W h_r + g_r)); the readout is sum_r a_r h_r, the
    region picked ("what is left of the cup": its state names its class).
    """

    GEOMETRY_HIDDEN = 32

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.reference_weight = nn.Linear(config.hidden_size, 1)
        self.query_weight = nn.Linear(config.hidden_size, 1)
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.geometry = nn.Sequential(
            RandomFeatureLinear(4, self.GEOMETRY_HIDDEN),
            nn.ReLU(),
            RandomFeatureLinear(self.GEOMETRY_HIDDEN, config.hidden_size),
        )
        self.temperature = config.alignment_temperature

    def forward(
        self,
        language_output: torch.Tensor,
        region_output: torch.Tensor,
        similarity: torch.Tensor,
        found: torch.Tensor,
        words: torch.Tensor,
        visual_attention_mask: torch.Tensor,
        boxes: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H) the region picked and (B, R) the weights that picked it. `similarity` (B, L, R):
        `word_region_similarity`; `found` (B, L, R), float32: its softmax over the regions at
        `alignment_temperature`, which the pooler computes too; `words` (B, L): the words that count (real
        tokens but [CLS]); `boxes` (B, R, 4+): x1, y1, x2, y2 first."""
        centre, size = box_centres_and_sizes(boxes[..., :4].float())
        size = size.clamp(min=1e-3)
        found_centre, found_size = found @ centre, found @ size.log()  # (B, L, 2) each
        best_match = similarity.float().max(-1).values / self.temperature
        rho = word_weights(self.reference_weight, language_output, words, best_match)
        reference_centre = (rho[..., None] * found_centre).sum(1, keepdim=True)  # (B, 1, 2)
        reference_size = (rho[..., None] * found_size).sum(1, keepdim=True)
        relative = torch.cat([centre - reference_centre, size.log() - reference_size], dim=-1)
        keys = self.key(region_output) + self.geometry(relative.to(region_output.dtype))
        weights = word_weights(self.query_weight, language_output, words).to(language_output.dtype)
        query = self.query((weights[..., None] * language_output).sum(1))
        scores = (keys @ query[..., None]).squeeze(-1).float() / math.sqrt(query.shape[-1])
        scores = scores.masked_fill(~visual_attention_mask.bool(), float("-inf"))
        picked = torch.softmax(scores, dim=-1)
        return (picked.to(region_output.dtype)[..., None] * region_output).sum(1), picked


class LxmertSAlignmentPooler(nn.Module):
    """The pooled output from word-region alignment (`config.pooler_type="alignment"`), not in LXMERT-S.

    A [CLS] can only report a match once the layers have learned to compare each word with the region it
    matches and gather the comparisons into it; trained from scratch, the small model never got there
    (docs/results.md). This pooler makes the comparison explicit: for each word w (every real token but
    [CLS]), the cosine similarities s_wr of its output with the region outputs give a_w, the regions averaged
    with softmax(s_w / `alignment_temperature`) (what the word found), and f_w = max_r s_wr (how well it
    matched); learned weights beta = softmax_w(u . h_w) pick the words that matter, and

        pooled = tanh(W [sum_w beta_w h_w ; sum_w beta_w a_w ; SCORE_SCALE sum_w beta_w f_w]).

    With `config.alignment_counts`, also sum_w beta_w c_w, c_w = sum_r sigmoid(COUNT_SHARPNESS (s_wr - theta))
    with a learned threshold theta: how many regions the word matches, which neither the softmax average nor
    the maximum can tell ("how many dogs are there?"). With `config.alignment_relations`, also the region
    where the text points relative to the object it names (`LxmertSRelationReadout`). WPG trains the
    similarities it reads.
    """

    # The match score is one input beside 2H others: scaled so that it is not lost among them at init.
    SCORE_SCALE = 5.0
    # How sharply a region counts as matched once its cosine passes the threshold (cosines lie in [-1, 1]).
    COUNT_SHARPNESS = 10.0
    COUNT_THRESHOLD = 0.5  # the threshold's initial value

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.word_weight = nn.Linear(config.hidden_size, 1)
        counts = 1 if config.alignment_counts else 0
        relations = config.hidden_size if config.alignment_relations else 0
        self.dense = nn.Linear(2 * config.hidden_size + 1 + counts + relations, config.hidden_size)
        self.activation = nn.Tanh()
        self.temperature = config.alignment_temperature
        self.count_threshold = nn.Parameter(torch.tensor(self.COUNT_THRESHOLD)) if counts else None
        self.relations = LxmertSRelationReadout(config) if relations else None

    def forward(
        self,
        language_output: torch.Tensor,
        region_output: torch.Tensor,
        attention_mask: torch.Tensor,
        visual_attention_mask: torch.Tensor,
        boxes: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The pooled output and, with `alignment_relations`, the relation readout's (B, R) weights (else
        None). `boxes` (B, R, 4+): the regions' boxes, which only the relation readout reads."""
        similarity = word_region_similarity(language_output, region_output, visual_attention_mask)
        matched = torch.softmax(similarity.float() / self.temperature, dim=-1)  # (B, L, R)
        found = matched.to(region_output.dtype) @ region_output
        words = attention_mask.bool().clone()
        words[:, 0] = False  # the [CLS]
        beta = word_weights(self.word_weight, language_output, words).to(language_output.dtype)[..., None]
        match = (beta[..., 0] * similarity.max(-1).values.to(beta.dtype)).sum(1, keepdim=True)
        parts = [(beta * language_output).sum(1), (beta * found).sum(1), self.SCORE_SCALE * match]
        if self.count_threshold is not None:
            # padding regions hold -2, below any threshold: they count nothing
            counts = torch.sigmoid(self.COUNT_SHARPNESS * (similarity.float() - self.count_threshold)).sum(-1)
            parts.append((beta[..., 0] * counts.to(beta.dtype)).sum(1, keepdim=True))
        relation_weights = None
        if self.relations is not None:
            picked, relation_weights = self.relations(
                language_output, region_output, similarity, matched, words, visual_attention_mask, boxes
            )
            parts.append(picked)
        return self.activation(self.dense(torch.cat(parts, -1))), relation_weights


class LxmertSClassificationHead(nn.Module):
    """LXMERT's downstream classifier: Linear(input, 2H) -> GELU -> LayerNorm -> Linear(2H, labels).

    The layers sit in a Sequential named `logit_fc`, as in transformers' `LxmertVisualAnswerHead`, so
    that LXMERT's `answer_head.logit_fc.{0,2,3}` weights map onto the QA head by key.
    """

    def __init__(self, config: LxmertSConfig, input_size: int, num_labels: int):
        super().__init__()
        hidden = 2 * config.hidden_size
        self.logit_fc = nn.Sequential(
            nn.Linear(input_size, hidden),
            nn.GELU(),
            nn.LayerNorm(hidden, eps=config.layer_norm_eps),
            nn.Linear(hidden, num_labels),
        )

    def forward(self, pooled_output: torch.Tensor) -> torch.Tensor:
        return self.logit_fc(pooled_output)


# Pre-training heads: one class per task, owning its loss (MSP paper §3; MVP; FLM).


@dataclass
class EncoderFeatures:
    """What the heads read: text outputs (B, L, H), region outputs without the visual [CLS] (B, R, H), the
    pooled multimodal representation (B, H) and the two padding masks (B, L), (B, R).

    The extra encoder passes a task reads (`PretrainingTask.passes`) fill the rest. "unidirectional" (FLM):
    the two unidirectional passes and the text's position embeddings (see `LxmertSUnidirectionalOutput`).
    "contrastive" (VSC, ITM_VSC): the uni-modal embeddings the contrastive loss compares, the unmasked text's
    embeddings (B, L, H) and the regions' (B, R, H), before any cross-modal layer. "negative_pairs" (WPG,
    ITM_VSC): `negative`, the encoder outputs of the negative pairs the model builds in the batch, pair n
    being text `negative_pairs[0][n]` with image `negative_pairs[1][n]` (row indices). "binding" (ITM_VSC with
    binding negatives): `binding`, the encoder outputs of each caption's binding negative with its own image,
    for the rows that have one. "relation_question" (RPT): `question`, the encoder outputs of each text that
    has a relation with its subject hidden (`relation_input_ids`), for those rows. `relation_weights` (B, R):
    which regions the relation readout picked (with `alignment_relations`).
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
    binding: EncoderFeatures | None = None
    question: EncoderFeatures | None = None
    relation_weights: torch.Tensor | None = None


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
    """A pre-training task's head: it reads the encoder's outputs (`EncoderFeatures`) and the task's labels
    and returns the task's loss. `label_names`: the labels it reads, the first one the task's primary label,
    whose presence in a batch switches the task on; `optional_label_names`: labels it reads when a setting
    asks.

    A head owns what concerns its parameters: their initial values (`initialize`), whether its decoder is
    tied to the word embeddings (`tied_to_word_embeddings`, a `decoder` Linear then), its vocabulary-sized
    parameters when the vocabulary is resized (`resize_vocabulary`), and its predictions at every position for
    inference (`predictions`, named as the fields of `LxmertSForPreTrainingOutput`; `always_predicted`: also
    in training, for predictions that cost nothing).
    """

    label_names: ClassVar[tuple[str, ...]]
    optional_label_names: ClassVar[tuple[str, ...]] = ()
    tied_to_word_embeddings: ClassVar[bool] = False
    always_predicted: ClassVar[bool] = False

    def check_labels(self, labels: dict[str, torch.Tensor], checks: LabelChecks) -> None:
        """Refuse labels of the wrong shape, dtype or values, naming the label."""
        raise NotImplementedError

    def forward(self, features: EncoderFeatures, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def initialize(self, config: LxmertSConfig) -> None:
        """Set the parameters that transformers' default initialisation (of Linear, Embedding, LayerNorm)
        does not; `LxmertSPreTrainedModel._init_weights` calls it."""

    def predictions(self, features: EncoderFeatures) -> dict[str, torch.Tensor]:
        return {}

    def resize_vocabulary(
        self, size: int, resize_linear: Callable[[nn.Linear, int], nn.Linear], mean_resizing: bool
    ) -> None:
        """Resize the vocabulary-sized parameters to `size` entries: `resize_linear` resizes a Linear's
        outputs as transformers resizes the output embeddings; `mean_resizing`, new entries get the mean of
        the old ones (else 0), as transformers' `resize_token_embeddings`."""


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


class WordPredictionHead(PretrainingHead):
    """A head that predicts words (MLM, FLM): BERT's transform, then a decoder tied to the word embeddings
    plus a bias; its labels are a word id per token, -100 where there is no target."""

    tied_to_word_embeddings = True

    def _add_word_decoder(self, config: LxmertSConfig) -> None:
        self.transform = LxmertSPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """(..., H) text states -> (..., vocab_size) word scores."""
        return self.decoder(self.transform(states)) + self.bias

    def initialize(self, config: LxmertSConfig) -> None:
        init.zeros_(self.bias)

    def resize_vocabulary(
        self, size: int, resize_linear: Callable[[nn.Linear, int], nn.Linear], mean_resizing: bool
    ) -> None:
        # the same decoder when its size is right already (as the output embeddings' is)
        self.decoder = resize_linear(self.decoder, size)
        if len(self.bias) != size:
            self.bias = _resized_vector(self.bias, size, self.bias.detach().mean() if mean_resizing else 0.0)

    def check_labels(self, labels: dict[str, torch.Tensor], checks: LabelChecks) -> None:
        name = self.label_names[0]
        checks.class_ids(
            name, labels[name], checks.per_token, len(self.bias), "vocabulary", ignore_index=True
        )


class MaskedLanguageModelingHead(WordPredictionHead):
    """MLM (MSP paper §3): cross-entropy at the masked text positions.

    In training, logits are computed for the masked positions only, never for batch x length x vocabulary
    (`logits` of every position is for inference). The decoder weight is tied to the word embeddings.
    """

    label_names = ("mlm_labels",)

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self._add_word_decoder(config)

    def predictions(self, features: EncoderFeatures) -> dict[str, torch.Tensor]:
        return {"prediction_logits": self.logits(features.language_output)}

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


class FreeLanguageModelingHead(WordPredictionHead):
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

    label_names = ("flm_labels",)

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.reconstructor = LxmertSReconstructor(config)
        self._add_word_decoder(config)
        self.corruption_rate = config.flm_corruption_rate
        self.directional_losses = config.flm_directional_losses

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
    """ITM (LXMERT) and ITM_HS (§3.3, eq. 3): match / mismatch from the pooled representation. The two tasks
    differ only in their data (random negatives, or hard ones, images similar to the text's), so they train
    this one module, `heads.itm`.

    Two logits with cross-entropy, as LXMERT: this equals eq. 3's binary cross-entropy with the match
    score s = softmax(logits)[1], and keeps LXMERT's `seq_relationship` weights importable. A row labelled
    -100 is no target, as in MLM; a batch without any target gives a zero loss in the graph (not the NaN of
    an empty mean).
    """

    label_names = ("itm_labels",)
    always_predicted = True  # (B, 2): the score the held-out ITM accuracy and retrieval read

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.classifier = nn.Linear(config.hidden_size, 2)

    def logits(self, pooled_output: torch.Tensor) -> torch.Tensor:
        return self.classifier(pooled_output)

    def predictions(self, features: EncoderFeatures) -> dict[str, torch.Tensor]:
        return {"itm_logits": self.logits(features.pooled_output)}

    def check_labels(self, labels: dict[str, torch.Tensor], checks: LabelChecks) -> None:
        checks.class_ids(
            "itm_labels", labels["itm_labels"], checks.per_row, 2, "0 mismatch, 1 match", ignore_index=True
        )

    def forward(self, features: EncoderFeatures, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        itm_labels = labels["itm_labels"]
        # the mean over the rows with a target, without a host sync
        summed = F.cross_entropy(self.logits(features.pooled_output).float(), itm_labels, reduction="sum")
        return summed / (itm_labels != IGNORE_INDEX).sum().clamp(min=1)


class MinedImageTextMatchingHead(ImageTextMatchingHead):
    """ITM_VSC: ITM whose negatives are mined in the batch from the VSC similarities (MVP, ALBEF): the batch
    holds matched pairs only, and `LxmertSForPreTraining` encodes one negative pair per row, half a text with
    an image sampled in proportion to softmax(similarity) (a hard image), half an image with a hard text.
    Cross-entropy over the B matched and B negative pairs. The same module as ITM, `heads.itm`.

    With binding negatives in the batch (`binding_input_ids`, `binding_mask`: each caption with the words that
    bind to its objects changed, `pretraining_pieces.binding_negatives`), those captions with their own image
    are negatives too: a pair that matches word for word and not in what binds to what (NegCLIP's hard
    negatives). They are scored against the captions they were made from, and the two cross-entropies
    averaged: pooled into one, the negatives outnumbered the matches two to one, and the held-out ITM accuracy
    at a 0.5 match probability fell from 98.5% to 63.9% (docs/results.md). With `binding_region_slots` (B, R),
    `binding_region_features` (B, R, F) and `binding_region_boxes` (B, R, 4) too, a binding negative may be
    its caption with its image changed instead: those slots given those features and boxes
    (`pretraining_pieces.region_binding_negatives`)."""

    label_names = ("itm_labels", "image_ids")
    optional_label_names = (
        "binding_input_ids",
        "binding_mask",
        "binding_region_slots",
        "binding_region_features",
        "binding_region_boxes",
    )
    REGION_LABELS = optional_label_names[2:]

    def __init__(self, config: LxmertSConfig):
        super().__init__(config)
        self.visual_feat_dim = config.visual_feat_dim
        self.visual_pos_dim = config.visual_pos_dim

    def check_labels(self, labels: dict[str, torch.Tensor], checks: LabelChecks) -> None:
        super().check_labels(labels, checks)
        checks.require(
            labels["itm_labels"] == 1,
            "itm_labels: itm_vsc mines its own negatives, so every row must be a matched pair (1)",
        )
        checks.row_ids("image_ids", labels["image_ids"])
        if ("binding_input_ids" in labels) != ("binding_mask" in labels):
            raise ValueError("binding_input_ids and binding_mask: give both or neither")
        if "binding_input_ids" in labels:
            check_shape("binding_input_ids", labels["binding_input_ids"], checks.per_token)
            check_dtype("binding_input_ids", labels["binding_input_ids"], "integer")
            checks.mask("binding_mask", labels["binding_mask"], checks.per_row)
        given = [name for name in self.REGION_LABELS if name in labels]
        if given and len(given) < len(self.REGION_LABELS):
            raise ValueError(f"{', '.join(self.REGION_LABELS)}: give all three or none (received {given})")
        if given:
            if "binding_input_ids" not in labels:
                raise ValueError(
                    "binding_region_slots: they change binding negatives: give binding_input_ids"
                )
            checks.mask("binding_region_slots", labels["binding_region_slots"], checks.per_region)
            features = checks.per_region.then(self.visual_feat_dim, "visual_feat_dim")
            checks.features("binding_region_features", labels["binding_region_features"], features)
            boxes = checks.per_region.then(self.visual_pos_dim, "visual_pos_dim")
            checks.features("binding_region_boxes", labels["binding_region_boxes"], boxes)

    def forward(self, features: EncoderFeatures, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        mined = self._pairs_loss(features.pooled_output, features.negative.pooled_output)
        if features.binding is None:
            return mined
        # the matched pairs against their binding negatives apart, as many of each, so that the negatives of
        # both kinds together do not outnumber the matches and shift what a 0.5 match probability means
        matched = features.pooled_output[labels["binding_mask"].bool()]
        return (mined + self._pairs_loss(matched, features.binding.pooled_output)) / 2

    def _pairs_loss(self, matched: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of matched pairs as 1 and negative pairs as 0 (pooled outputs)."""
        logits = self.logits(torch.cat([matched, negative])).float()
        targets = torch.cat([logits.new_ones(len(matched)), logits.new_zeros(len(negative))]).long()
        return F.cross_entropy(logits, targets)


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
    the positives. `vsc_visual_feats` (B, R, F), optional: the fed regions' features before MRFR and IFRS
    corrupted them, which the image side then reads, as retrieval's `get_image_features` does (the text side
    likewise reads the text before MLM masked it).
    """

    label_names = ("vsc_labels", "image_ids")
    optional_label_names = ("vsc_visual_feats",)
    MAX_SCALE = 100.0

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        dim = config.contrastive_dim or config.hidden_size
        self.text_projection = nn.Linear(config.hidden_size, dim)
        self.image_projection = nn.Linear(config.hidden_size, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.contrastive_temperature)))
        self.visual_feat_dim = config.visual_feat_dim

    def initialize(self, config: LxmertSConfig) -> None:
        init.constant_(self.logit_scale, math.log(1 / config.contrastive_temperature))

    def check_labels(self, labels: dict[str, torch.Tensor], checks: LabelChecks) -> None:
        checks.row_ids("vsc_labels", labels["vsc_labels"])
        checks.row_ids("image_ids", labels["image_ids"])
        if "vsc_visual_feats" in labels:
            features = checks.per_region.then(self.visual_feat_dim, "visual_feat_dim")
            checks.features("vsc_visual_feats", labels["vsc_visual_feats"], features)

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
        temperature below 1/100 makes the softmax one-hot and the gradients vanish. The parameter itself is
        clamped, as CLIP's training does after each step: a clamp of the value alone has no gradient past
        100, and a scale that got there could never come back."""
        with torch.no_grad():
            self.logit_scale.clamp_(max=math.log(self.MAX_SCALE))
        return self.logit_scale.exp()

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


class TagGroundingHead(PretrainingHead):
    """TAG (object-tag grounding; not in MSP): a word that names the detector's class of some regions of its
    image (an object tag, in MVP's and Oscar's sense) should match those regions better than the image's
    others.

    The supervision is exact where the text is the detector's labels, as in the token stage, whose every word
    names one region: MSP's first stage reads the tags and learns nothing about where they are. For each such
    word: the cosine similarities of its cross-modal output with the region outputs (`word_region_similarity`,
    which the alignment pooler and WPG read too), divided by `alignment_temperature`, a softmax over the
    image's regions, and -log of the mass on the regions the word names; averaged over those words.
    `tag_targets` (B, L, R): word l names region r's detected class (`pretraining_pieces.tag_targets`).
    """

    label_names = ("tag_targets",)

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.temperature = config.alignment_temperature

    def check_labels(self, labels: dict[str, torch.Tensor], checks: LabelChecks) -> None:
        checks.mask("tag_targets", labels["tag_targets"], checks.per_token.then(checks.regions, "regions"))

    def forward(self, features: EncoderFeatures, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        targets = labels["tag_targets"].bool() & features.visual_attention_mask.bool()[:, None, :]
        similarity = word_region_similarity(
            features.language_output, features.region_output, features.visual_attention_mask
        )
        log_probabilities = (similarity.float() / self.temperature).log_softmax(-1)
        words = targets.any(-1) & features.attention_mask.bool()
        if not bool(words.any()):
            return _zero_loss_like(log_probabilities)
        on_targets = torch.logsumexp(log_probabilities.masked_fill(~targets, float("-inf")), -1)
        return -on_targets[words].mean()


class WordBoxRegressionHead(PretrainingHead):
    """WBR (word box regression; not in MSP): a word that names one region of its image predicts, from its
    cross-modal output, that region's box centre and size (L1, as DETR's and MDETR's box losses), averaged
    over those words and the four numbers.

    TAG and WPG teach a word *which* regions it names; in LXMERT a region's place then never reaches the
    word (the position probe of `lxmert_s_msp.evidence.grounding`), so no word can compare two places ("left
    of"). The supervision is exact where the text is the detector's labels (the token stage) and wherever a
    word names a class the detector found once in the image. `wbr_mask` (B, L) and `wbr_targets` (B, L, 4)
    x1, y1, x2, y2: `pretraining_pieces.word_box_piece`.
    """

    label_names = ("wbr_mask", "wbr_targets")

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.transform = LxmertSPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, 4)

    def predict(self, language_output: torch.Tensor) -> torch.Tensor:
        """(..., 4) predicted box centres x, y and widths, heights from (..., H) word outputs."""
        return self.decoder(self.transform(language_output))

    def predictions(self, features: EncoderFeatures) -> dict[str, torch.Tensor]:
        return {"word_box_predictions": self.predict(features.language_output)}

    def check_labels(self, labels: dict[str, torch.Tensor], checks: LabelChecks) -> None:
        checks.mask("wbr_mask", labels["wbr_mask"], checks.per_token)
        boxes = labels["wbr_targets"]
        check_dtype("wbr_targets", boxes, "floating")
        checks.scores("wbr_targets", boxes, checks.per_token.then(4, "x1, y1, x2, y2"), "box coordinates")

    def forward(self, features: EncoderFeatures, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        words = labels["wbr_mask"].bool() & features.attention_mask.bool()
        predicted = self.predict(features.language_output[words]).float()
        target = torch.cat(box_centres_and_sizes(labels["wbr_targets"][words].float()), -1)
        # a sum over the words, not a mean: a batch without any stays a zero in the graph, never a NaN
        return F.l1_loss(predicted, target, reduction="sum") / (4 * words.sum().clamp(min=1))


class RelationPointingHead(PretrainingHead):
    """RPT (relation pointing; not in MSP): in a text with one spatial relation word ("a red cup left of a
    blue ball"), with the relation's subject hidden ("a [MASK] [MASK] left of a blue ball", an extra encoder
    pass), the relation readout (`LxmertSRelationReadout`, `config.alignment_relations`) should pick the
    regions the subject names: -log of its weight on them, averaged over such texts.

    This is VQA's relation question ("what is left of the ball?") asked of every caption and phrase, with the
    answer's regions known from the detector's labels, so the readout learns in pre-training (at its learning
    rate) which word is the reference, which the relation, and how places compare, none of which ITM or MLM
    asks of it. With the subject left in the text the readout found it by its name (the pointing probe of
    `lxmert_s_msp.evidence.grounding`: as much weight with the opposite relation word). `relation_targets`
    (B, R) and `relation_input_ids` (B, L): `pretraining_pieces.relation_pointing_piece`.
    """

    label_names = ("relation_targets", "relation_input_ids")

    def __init__(self, config: LxmertSConfig):
        super().__init__()

    def check_labels(self, labels: dict[str, torch.Tensor], checks: LabelChecks) -> None:
        checks.mask("relation_targets", labels["relation_targets"], checks.per_region)
        check_shape("relation_input_ids", labels["relation_input_ids"], checks.per_token)
        check_dtype("relation_input_ids", labels["relation_input_ids"], "integer")

    def forward(self, features: EncoderFeatures, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        if features.question is None:  # no text of the batch has a relation to point at
            return _zero_loss_like(features.pooled_output)
        question = features.question
        targets = labels["relation_targets"].bool()
        targets = targets[targets.any(1)] & question.visual_attention_mask.bool()
        on_targets = (question.relation_weights.float() * targets).sum(-1)
        return -on_targets.clamp(min=torch.finfo(on_targets.dtype).tiny).log().mean()


class RegionFeatureRegressionHead(RegionHead):
    """MRFR (LXMERT): smooth-L1 to the original RoI feature, averaged over its dimensions, kept at
    masked regions, averaged over batch x regions, times `visual_loss_normalizer` (~1/0.15)."""

    label_names = ("mrfr_labels", "region_mask")

    def __init__(self, config: LxmertSConfig):
        super().__init__(config)
        self.decoder = nn.Linear(config.hidden_size, config.visual_feat_dim)
        self.normalizer = config.visual_loss_normalizer

    def predict(self, features: EncoderFeatures, chosen: torch.Tensor | None = None) -> torch.Tensor:
        """The predicted RoI features (B, R, F), or (N, F) at the `chosen` (B, R) regions only."""
        return self.decoder(self.region_states(features, chosen))

    def predictions(self, features: EncoderFeatures) -> dict[str, torch.Tensor]:
        return {"region_feature_predictions": self.predict(features)}

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

    label_names = (
        "moc_object_labels",
        "moc_object_confidences",
        "moc_attribute_labels",
        "moc_attribute_confidences",
    )
    optional_label_names = ("region_mask",)  # with moc_masked_regions_only

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

    def predictions(self, features: EncoderFeatures) -> dict[str, torch.Tensor]:
        object_logits, attribute_logits = self.logits(features)
        return {"object_logits": object_logits, "attribute_logits": attribute_logits}

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

    def resize_vocabulary(
        self, size: int, resize_linear: Callable[[nn.Linear, int], nn.Linear], mean_resizing: bool
    ) -> None:
        if self.dense.out_features == size:
            return
        self.dense = resize_linear(self.dense, size)
        norm = nn.LayerNorm(size, eps=self.LayerNorm.eps)
        norm.weight = _resized_vector(self.LayerNorm.weight, size, 1.0)
        norm.bias = _resized_vector(self.LayerNorm.bias, size, 0.0)
        self.LayerNorm = norm


class PhraseTopicHead(TopicHead):
    label_names = ("titp_labels",)


class SentenceTopicHead(TopicHead):
    label_names = ("tits_labels",)


def _resized_vector(vector: torch.Tensor, size: int, fill: float | torch.Tensor) -> nn.Parameter:
    """A vocabulary-sized vector cut or extended to `size`, its new entries `fill`."""
    resized = vector.detach().new_empty(size)
    kept = min(size, len(vector))
    resized[:kept] = vector.detach()[:kept]
    resized[kept:] = fill
    return nn.Parameter(resized, requires_grad=vector.requires_grad)


# The task registry: a pre-training task is its head (loss), its collator piece (inputs and labels,
# `pretraining_pieces.py`) and one line below. Nothing else in the model or the collators names a task.

# The extra encoder passes a head may read (`EncoderFeatures`), in the order `LxmertSForPreTraining` runs
# them: each draws dropout noise, so a fixed order keeps a seeded run reproducible.
ENCODER_PASSES = ("contrastive", "negative_pairs", "binding", "relation_question", "unidirectional")


@dataclass(frozen=True)
class PretrainingTask:
    """One pre-training task.

    head: the head class (its loss and the labels it reads). piece: the collator piece that adds those labels
    to a `PretrainingBatch`. module: the key under `heads.` when several tasks train one module (ITM on
    random, hard or mined negatives); the task's name otherwise. passes: the extra encoder passes its head
    reads (`ENCODER_PASSES`). requires: tasks it cannot go without, each with the reason. pairs: "matched"
    when the model builds its negatives in the batch, so every row must be fed its own image; "mismatched"
    when its piece feeds other images. needs: what its piece needs from the stage beyond the store and the
    tokenizer ("object_vocab": the detector's class names; "hard_negatives": the store's look-alike table).
    negatives: how the task draws ITM negatives, in words for the run's log (format fields: `images`, the
    corpus's image count; `hard_negatives`, the table's file; `without`, store images with no look-alike).
    """

    name: str
    head: type[PretrainingHead]
    piece: Callable[[PretrainingBatch], None]
    module: str | None = None
    passes: frozenset[str] = frozenset()
    requires: Mapping[str, str] | None = None
    pairs: Literal["matched", "mismatched"] | None = None
    needs: frozenset[str] = frozenset()
    negatives: str | None = None

    @property
    def module_name(self) -> str:
        return self.module or self.name


# In the order their collator pieces run in a batch: the pieces that choose each row's image first (the store
# is read once, for the images fed), topic targets on the text as written, regions shuffled before they are
# masked, and MLM, which masks the text, last.
PRETRAINING_TASKS: dict[str, PretrainingTask] = {
    task.name: task
    for task in (
        PretrainingTask(
            "itm",
            ImageTextMatchingHead,
            random_negatives_piece,
            pairs="mismatched",
            negatives="random among the corpus's {images:,} images (itm)",
        ),
        PretrainingTask(
            "itm_hs",
            ImageTextMatchingHead,
            hard_negatives_piece,
            module="itm",
            pairs="mismatched",
            needs=frozenset({"hard_negatives"}),
            negatives="hard: each image's most similar images from {hard_negatives} among the corpus's "
            "{images:,} images (itm_hs; {without:,} store images have none there and draw at random)",
        ),
        PretrainingTask(
            "itm_vsc",
            MinedImageTextMatchingHead,
            matched_pairs_piece,
            module="itm",
            passes=frozenset({"contrastive", "negative_pairs", "binding"}),
            requires={"vsc": "mines its negatives from the VSC similarities"},
            pairs="matched",
            negatives="mined in each batch from the VSC similarities (itm_vsc)",
        ),
        PretrainingTask(
            "vsc", VisualSemanticContrastiveHead, contrastive_piece, passes=frozenset({"contrastive"})
        ),
        PretrainingTask("titp", PhraseTopicHead, phrase_topic_piece, needs=frozenset({"object_vocab"})),
        PretrainingTask("tits", SentenceTopicHead, sentence_topic_piece, needs=frozenset({"object_vocab"})),
        PretrainingTask("ifrs", ImageFeatureShuffleHead, shuffle_piece),
        PretrainingTask("tag", TagGroundingHead, tag_piece, needs=frozenset({"object_vocab"})),
        PretrainingTask("wbr", WordBoxRegressionHead, word_box_piece, needs=frozenset({"object_vocab"})),
        PretrainingTask(
            "rpt",
            RelationPointingHead,
            relation_pointing_piece,
            passes=frozenset({"relation_question"}),
            needs=frozenset({"object_vocab"}),
        ),
        PretrainingTask("mrfr", RegionFeatureRegressionHead, region_regression_piece),
        PretrainingTask("moc", MaskedObjectClassificationHead, object_classification_piece),
        PretrainingTask(
            "flm",
            FreeLanguageModelingHead,
            free_language_modeling_piece,
            passes=frozenset({"unidirectional"}),
        ),
        PretrainingTask(
            "wpg",
            PhraseGroundingHead,
            grounding_piece,
            passes=frozenset({"negative_pairs"}),
            pairs="matched",
            needs=frozenset({"object_vocab"}),
        ),
        PretrainingTask("mlm", MaskedLanguageModelingHead, masked_language_modeling_piece),
    )
}


def check_pretraining_tasks(
    tasks: Iterable[str], loss_weights: Mapping[str, float] | None = None, name: str = "pretraining_tasks"
) -> None:
    """Refuse a list of tasks that no model or stage can train, naming the tasks at fault: unknown or repeated
    names, two tasks of one head module, a missing required task, and tasks that need matched pairs beside
    tasks that mismatch them. `loss_weights` may name known tasks only. `name`: the list's name in errors."""
    tasks = list(tasks)
    known = list(PRETRAINING_TASKS)
    unknown = [task for task in tasks if task not in PRETRAINING_TASKS]
    if unknown:
        raise ValueError(f"{name}: unknown {unknown}; known tasks are {known}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"{name} lists a task twice: {tasks}")
    by_module: dict[str, list[str]] = {}
    for task in tasks:
        by_module.setdefault(PRETRAINING_TASKS[task].module_name, []).append(task)
    for module, sharing in by_module.items():
        if len(sharing) > 1:
            raise ValueError(
                f"{name}: {sharing} train the same head (heads.{module}) on different negatives; list one "
                "of them"
            )
    for task in tasks:
        for required, reason in (PRETRAINING_TASKS[task].requires or {}).items():
            if required not in tasks:
                raise ValueError(f"{name}: {task!r} {reason}: add {required!r}")
    matched = [task for task in tasks if PRETRAINING_TASKS[task].pairs == "matched"]
    mismatched = [task for task in tasks if PRETRAINING_TASKS[task].pairs == "mismatched"]
    if matched and mismatched:
        raise ValueError(
            f"{name}: {matched} build their negatives in the batch and need every row to be a matched pair, "
            f"but {mismatched} feed mismatched images; train ITM as 'itm_vsc' beside them"
        )
    stray = [task for task in loss_weights or {} if task not in PRETRAINING_TASKS]
    if stray:
        raise ValueError(f"loss_weights: unknown tasks {stray}; known tasks are {known}")


def tasks_need(tasks: Iterable[str], need: str) -> bool:
    """Whether any of `tasks` needs `need` from the stage (`PretrainingTask.needs`)."""
    return any(need in PRETRAINING_TASKS[task].needs for task in tasks)


def label_tasks() -> dict[str, tuple[str, ...]]:
    """Each label name and the tasks whose heads read it."""
    tasks: dict[str, tuple[str, ...]] = {}
    for task in PRETRAINING_TASKS.values():
        for name in (*task.head.label_names, *task.head.optional_label_names):
            tasks[name] = (*tasks.get(name, ()), task.name)
    return tasks


def head_of(key: str) -> str | None:
    """The head module a parameter name belongs to ("heads.mlm", "answer_head", "classifier"); None for the
    encoder. Every LXMERT-S model keeps its heads under these names."""
    parts = key.split(".")
    if parts[0] == "heads" and len(parts) > 2:
        return ".".join(parts[:2])
    if parts[0] in ("answer_head", "classifier"):
        return parts[0]
    return None


class LxmertSPreTrainedModel(PreTrainedModel):
    """Also: what `from_pretrained` reports. A checkpoint of any LXMERT-S model loads into any other: the
    encoder whole, each head the two share, and a head of the model that the checkpoint lacks entirely starts
    fresh (a new stage's task, a new downstream head), while a head of the checkpoint that the model lacks is
    not used. Both are expected, so the log names them in one line instead of transformers' table of every
    key (`fresh_parameters` lists the fresh heads' parameters); the loading info
    (`output_loading_info=True`) still lists every missing and unexpected key, as transformers' does. A head
    only partly in the checkpoint and any encoder key are logged by transformers as usual."""

    config_class = LxmertSConfig
    config: LxmertSConfig
    base_model_prefix = "lxmert"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["LxmertSCrossModalityLayer"]
    # forward takes **labels; the Trainer must not pass num_items_in_batch (it would mis-scale
    # gradient accumulation, each head already averages its own loss).
    accepts_loss_kwargs = False
    # names of the parameters of the heads from_pretrained initialised because the checkpoint lacked them
    fresh_parameters: frozenset[str] = frozenset()
    # the keys of whole heads, fresh or unused, kept out of transformers' log table (see the class docstring)
    _whole_heads_keys: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())

    def _adjust_missing_and_unexpected_keys(self, loading_info) -> None:
        """transformers' hook between loading a checkpoint and logging its missing and unexpected keys."""
        super()._adjust_missing_and_unexpected_keys(loading_info)
        tied = set(self._tied_weights_keys or {})
        loaded = set(self.state_dict()) - loading_info.missing_keys - tied
        fresh = (
            {head_of(key) for key in loading_info.missing_keys} - {head_of(key) for key in loaded} - {None}
        )
        own = {head_of(key) for key in self.state_dict()}
        unused = {head_of(key) for key in loading_info.unexpected_keys} - own - {None}
        self._whole_heads_keys = (
            frozenset(key for key in loading_info.missing_keys if head_of(key) in fresh),
            frozenset(key for key in loading_info.unexpected_keys if head_of(key) in unused),
        )
        loading_info.missing_keys -= self._whole_heads_keys[0]
        loading_info.unexpected_keys -= self._whole_heads_keys[1]
        self.fresh_parameters = frozenset(
            name for name, _ in self.named_parameters() if head_of(name) in fresh
        )
        news = [f"heads {', '.join(sorted(fresh))} start fresh"] if fresh else []
        news += [f"the checkpoint's heads {', '.join(sorted(unused))} are not used"] if unused else []
        if news:
            logger.warning(f"{type(self).__name__}: " + "; ".join(news))

    @staticmethod
    def _finalize_model_loading(model, load_config, loading_info):
        """transformers' last loading step, which logs the report: the whole heads' keys go back into the
        loading info once it is logged."""
        loading_info = PreTrainedModel._finalize_model_loading(model, load_config, loading_info)
        missing, unexpected = model._whole_heads_keys
        loading_info.missing_keys |= missing
        loading_info.unexpected_keys |= unexpected
        return loading_info

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, ZeroStartLinear):  # before the default, which would mark it initialised
            init.zeros_(module.weight)
            init.zeros_(module.bias)
            return
        if isinstance(module, RandomFeatureLinear):  # likewise
            bound = 1 / math.sqrt(module.in_features)
            init.uniform_(module.weight, -bound, bound)
            init.uniform_(module.bias, -bound, bound)
            return
        super()._init_weights(module)
        if isinstance(module, PretrainingHead):
            module.initialize(self.config)
        elif isinstance(module, LxmertSReconstructor):
            init.normal_(module.mask_embedding, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, LxmertSAlignmentPooler) and module.count_threshold is not None:
            init.constant_(module.count_threshold, module.COUNT_THRESHOLD)
        elif isinstance(module, LxmertSVisualFeatureEncoder) and module.visual_cls_feature is not None:
            init.normal_(module.visual_cls_feature, mean=0.0, std=self.config.initializer_range)
            # not saved, so from_pretrained (which builds on the meta device) must set it here
            init.copy_(module.visual_cls_box, torch.tensor(VISUAL_CLS_BOX))


def _encoder_extras(encoded: LxmertSModelOutput) -> dict[str, tuple[torch.Tensor, ...] | None]:
    """What a task output passes on from the encoder: hidden states and attentions, when asked for."""
    names = (
        "language_hidden_states",
        "vision_hidden_states",
        "language_attentions",
        "vision_attentions",
        "cross_encoder_attentions",
    )
    return {name: encoded.get(name) for name in names}


class LxmertSModel(LxmertSPreTrainedModel):
    """The LXMERT-S encoder: embeddings, cross-modality layers and the pooler(s)."""

    def __init__(self, config: LxmertSConfig):
        super().__init__(config)
        self.embeddings = LxmertSEmbeddings(config)
        self.encoder = LxmertSEncoder(config)
        self.pooler = (
            LxmertSAlignmentPooler(config) if config.pooler_type == "alignment" else LxmertSPooler(config)
        )
        self.visual_pooler = LxmertSPooler(config) if config.pooler_type == "product" else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def _check_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        position_ids: torch.Tensor | None,
    ) -> None:
        """The text inputs: shapes and dtypes here; values on the device (`input_checks.ValueChecks`)."""
        config = self.config
        if input_ids.dim() != 2:
            raise shape_error("input_ids", "(batch, length)", input_ids.shape)
        check_dtype("input_ids", input_ids, "integer")
        batch, length = input_ids.shape
        if batch == 0 or length == 0:
            raise ValueError(
                f"input_ids: expected at least one row of at least one token, received {(batch, length)}"
            )
        if length > config.max_position_embeddings:
            raise ValueError(
                f"input_ids: text length {length} exceeds the position table "
                f"(max_position_embeddings={config.max_position_embeddings})"
            )
        text = Shape((batch, length), ("batch", "length"))
        for name, tensor in (
            ("attention_mask", attention_mask),
            ("token_type_ids", token_type_ids),
            ("position_ids", position_ids),
        ):
            if tensor is not None:
                check_shape(name, tensor, text)
        if position_ids is None and config.position_ids_type == "word":
            raise ValueError(
                "position_ids: this model uses word-level positions (config.position_ids_type='word'), "
                "which only the tokenizer side can compute; pass position_ids from LxmertSProcessor"
            )

        values = ValueChecks(config.check_input_values)
        values.ids("input_ids", input_ids, self.embeddings.word_embeddings.num_embeddings, "vocab_size")
        if token_type_ids is not None:
            values.ids("token_type_ids", token_type_ids, config.type_vocab_size, "type_vocab_size")
        if position_ids is not None:
            values.ids(
                "position_ids", position_ids, config.max_position_embeddings, "max_position_embeddings"
            )
        if attention_mask is not None:
            values.padding_mask("attention_mask", attention_mask, "token")

    def _check_regions(
        self,
        visual_feats: torch.Tensor,
        visual_pos: torch.Tensor,
        visual_attention_mask: torch.Tensor | None,
        batch: int | None = None,
    ) -> None:
        """The image inputs, of `batch` rows (the text's; None: any), as `_check_text` checks the text."""
        config = self.config
        rows = "batch" if batch is None else batch
        if visual_feats.dim() != 3 or (batch is not None and visual_feats.shape[0] != batch):
            raise shape_error(
                "visual_feats", f"({rows}, regions, {config.visual_feat_dim})", visual_feats.shape
            )
        if visual_feats.shape[-1] != config.visual_feat_dim:
            raise shape_error(
                "visual_feats",
                f"(batch, regions, {config.visual_feat_dim}) [visual_feat_dim]",
                visual_feats.shape,
            )
        batch, regions = visual_feats.shape[:2]
        if regions == 0:
            raise ValueError(
                f"visual_feats: expected at least one region, received {tuple(visual_feats.shape)}"
            )
        check_dtype("visual_feats", visual_feats, "floating")
        check_shape(
            "visual_pos",
            visual_pos,
            Shape((batch, regions, config.visual_pos_dim), ("batch", "regions", "visual_pos_dim")),
        )
        check_dtype("visual_pos", visual_pos, "floating")
        if visual_attention_mask is not None:
            check_shape(
                "visual_attention_mask", visual_attention_mask, Shape((batch, regions), ("batch", "regions"))
            )

        values = ValueChecks(config.check_input_values)
        values.finite("visual_feats", visual_feats)
        values.unit_interval("visual_pos", visual_pos, "boxes (x1, y1, x2, y2 over the image's size)")
        if visual_attention_mask is not None:
            values.padding_mask("visual_attention_mask", visual_attention_mask, "region")

    def _complete_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        visual_feats: torch.Tensor,
        visual_pos: torch.Tensor,
        visual_attention_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Check the inputs and fill in the optional ones; the visual mask gains the visual [CLS] when there
        is one. Returns attention_mask, token_type_ids, position_ids, visual_attention_mask."""
        self._check_text(input_ids, attention_mask, token_type_ids, position_ids)
        batch = len(input_ids)
        self._check_regions(visual_feats, visual_pos, visual_attention_mask, batch)
        token_type_ids, position_ids = text_defaults(input_ids, token_type_ids, position_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        visual_attention_mask = visual_mask_or_ones(visual_feats, visual_attention_mask)
        if self.config.visual_cls_token:
            visual_attention_mask = torch.cat(
                [visual_attention_mask.new_ones(batch, 1), visual_attention_mask], 1
            )
        return attention_mask, token_type_ids, position_ids, visual_attention_mask

    def forward(
        self,
        input_ids: torch.Tensor,
        visual_feats: torch.Tensor,
        visual_pos: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> LxmertSModelOutput | tuple:
        config = self.config
        output_hidden_states = (
            config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        return_dict = config.return_dict if return_dict is None else return_dict
        if output_attentions and config._attn_implementation != "eager":
            logger.warning_once(
                f"output_attentions=True: {config._attn_implementation} attention returns no weights, so the "
                "calls that ask for them run eager attention (attn_implementation='eager' avoids the switch)"
            )

        attention_mask, token_type_ids, position_ids, visual_attention_mask = self._complete_inputs(
            input_ids,
            attention_mask,
            token_type_ids,
            position_ids,
            visual_feats,
            visual_pos,
            visual_attention_mask,
        )
        lang = self.embeddings(input_ids, token_type_ids, position_ids)
        visual = self.encoder.visn_fc(visual_feats, visual_pos)
        lang_mask = additive_mask(attention_mask, lang)
        visual_mask = additive_mask(visual_attention_mask, visual)
        visual_self_mask = self.encoder.region_self_mask(visual_mask, visual_pos)
        visual_boxes = self.encoder.region_boxes(visual_pos)

        lang_states, visual_states = (lang,), (visual,)
        lang_attentions, visual_attentions, cross_attentions = (), (), ()
        for layer in self.encoder.x_layers:
            lang, visual, lang_weights, visual_weights, cross_weights = layer(
                lang,
                lang_mask,
                visual,
                visual_mask,
                output_attentions=output_attentions,
                visual_self_mask=visual_self_mask,
                visual_boxes=visual_boxes,
            )
            lang_states += (lang,)
            visual_states += (visual,)
            lang_attentions += (lang_weights,)
            visual_attentions += (visual_weights,)
            cross_attentions += (cross_weights,)

        if self.config.pooler_type == "alignment":
            first_region = 1 if self.config.visual_cls_token else 0
            pooled, relation_weights = self.pooler(
                lang,
                visual[:, first_region:],
                attention_mask,
                visual_attention_mask[:, first_region:],
                visual_pos,
            )
        else:
            pooled, relation_weights = self.pooler(lang), None
        if self.visual_pooler is not None:
            pooled = pooled * self.visual_pooler(visual)

        output = LxmertSModelOutput(
            language_output=lang,
            vision_output=visual,
            pooled_output=pooled,
            language_hidden_states=lang_states if output_hidden_states else None,
            vision_hidden_states=visual_states if output_hidden_states else None,
            language_attentions=lang_attentions if output_attentions else None,
            vision_attentions=visual_attentions if output_attentions else None,
            cross_encoder_attentions=cross_attentions if output_attentions else None,
            relation_weights=relation_weights,
        )
        return output if return_dict else output.to_tuple()

    def unidirectional_passes(
        self,
        input_ids: torch.Tensor,
        visual_feats: torch.Tensor,
        visual_pos: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> LxmertSUnidirectionalOutput:
        """FLM's left-to-right and right-to-left encodings of the text (Wang et al., CVPR 2023), through the
        cross-modality layers with the same weights as `forward`.

        The two passes are one sequence of 2L tokens with the mask of `unidirectional_attention_mask`, so the
        image side runs once for both: it attends to the regions only, since a region that read the text
        would carry the later words back to every word of the left-to-right pass.
        """
        attention_mask, token_type_ids, position_ids, visual_attention_mask = self._complete_inputs(
            input_ids,
            attention_mask,
            token_type_ids,
            position_ids,
            visual_feats,
            visual_pos,
            visual_attention_mask,
        )

        def both_passes(text: torch.Tensor) -> torch.Tensor:
            return torch.cat([text, text], dim=1)

        lang = self.embeddings(both_passes(input_ids), both_passes(token_type_ids), both_passes(position_ids))
        visual = self.encoder.visn_fc(visual_feats, visual_pos)
        lang_mask = additive_mask(unidirectional_attention_mask(attention_mask), lang)
        visual_mask = additive_mask(visual_attention_mask, visual)
        visual_self_mask = self.encoder.region_self_mask(visual_mask, visual_pos)
        visual_boxes = self.encoder.region_boxes(visual_pos)
        states = ()
        for layer in self.encoder.x_layers:
            lang, visual, *_ = layer(
                lang,
                lang_mask,
                visual,
                visual_mask,
                vision_sees_language=False,
                visual_self_mask=visual_self_mask,
                visual_boxes=visual_boxes,
            )
            states += (lang,)
        return LxmertSUnidirectionalOutput(
            hidden_states=states,
            position_embeddings=self.embeddings.position_embeddings(position_ids),
            attention_mask=attention_mask,
        )


class LxmertSContrastiveFeatures:
    """`get_text_features` / `get_image_features` from the VSC head (`heads.vsc`) of a model carrying it.

    Shared by `LxmertSForPreTraining` and `LxmertSForImageTextRetrieval`, so that both embed with the same
    code and the retrieval model, whose head has the same key, loads it from a pre-training checkpoint. The
    host model has `config`, `lxmert` (`LxmertSModel`) and `heads` (`nn.ModuleDict`).
    """

    config: LxmertSConfig
    lxmert: LxmertSModel
    heads: nn.ModuleDict

    @property
    def _first_region(self) -> int:
        """Index of the first region in the visual outputs (after the visual [CLS], when there is one)."""
        return 1 if self.config.visual_cls_token else 0

    @property
    def has_contrastive_features(self) -> bool:
        """Whether the model carries the VSC head, so that `get_text_features` / `get_image_features` work."""
        return "vsc" in self.heads

    def _text_embeddings(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, position_ids: torch.Tensor | None
    ) -> torch.Tensor:
        """The text's embeddings before any cross-modal layer, what VSC compares."""
        return self.lxmert.embeddings(input_ids, *text_defaults(input_ids, token_type_ids, position_ids))

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        """The VSC text embedding, as CLIP's `get_text_features` (needs the `vsc` head): `pooler_output`
        (B, D), L2-normalised, whose dot product with that of `get_image_features` ranks images and texts
        with no cross-modal pass; `last_hidden_state` (B, L, H), the token embeddings it pools (see
        `_features_output`)."""
        head = self._contrastive_head()
        self.lxmert._check_text(input_ids, attention_mask, token_type_ids, position_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeddings = self._text_embeddings(input_ids, token_type_ids, position_ids)
        pooled = head.text_embeds(embeddings, attention_mask)
        return self._features_output(embeddings, pooled, output_hidden_states, output_attentions, return_dict)

    def get_image_features(
        self,
        visual_feats: torch.Tensor,
        visual_pos: torch.Tensor,
        visual_attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        """The VSC image embedding (see `get_text_features`): `pooler_output` (B, D) pools the regions;
        `last_hidden_state` (B, R', H), the projected region features, the visual [CLS] first when the model
        has one (as `vision_output`)."""
        head = self._contrastive_head()
        self.lxmert._check_regions(visual_feats, visual_pos, visual_attention_mask)
        embeddings = self.lxmert.encoder.visn_fc(visual_feats, visual_pos)
        mask = visual_mask_or_ones(visual_feats, visual_attention_mask)
        pooled = head.image_embeds(embeddings[:, self._first_region :], mask)
        return self._features_output(embeddings, pooled, output_hidden_states, output_attentions, return_dict)

    def _features_output(
        self,
        embeddings: torch.Tensor,
        pooled: torch.Tensor,
        output_hidden_states: bool | None,
        output_attentions: bool | None,
        return_dict: bool | None,
    ) -> BaseModelOutputWithPooling | tuple:
        """What both feature methods return, CLIP's `BaseModelOutputWithPooling` (a tuple with
        `return_dict=False`). VSC reads the inputs of the first cross-modality layer, LXMERT-S having no layer
        of one modality: asked for, the hidden states are those embeddings alone and the attentions are
        empty, one entry per layer passed."""
        config = self.config
        output_hidden_states = (
            config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output = BaseModelOutputWithPooling(
            last_hidden_state=embeddings,
            pooler_output=pooled,
            hidden_states=(embeddings,) if output_hidden_states else None,
            attentions=() if output_attentions else None,
        )
        return_dict = config.return_dict if return_dict is None else return_dict
        return output if return_dict else output.to_tuple()

    @property
    def contrastive_logit_scale(self) -> float:
        """What the VSC loss multiplies the cosine similarity of the features with (1 / its temperature): the
        similarity as a logit, comparable with ITM's log-odds when retrieval re-ranks with both."""
        return self._contrastive_head().scale().item()

    def _contrastive_head(self) -> VisualSemanticContrastiveHead:
        if "vsc" not in self.heads:
            raise ValueError(
                f"text and image features come from the VSC head; this model carries {list(self.heads)} "
                "(pre-train with the 'vsc' task: config.pretraining_tasks)"
            )
        return self.heads["vsc"]


@dataclass
class EncoderInputs:
    """What the extra encoder passes of `LxmertSForPreTraining` read: the batch's text and image inputs
    (padding masks filled in), its labels and the main pass's outputs."""

    text: dict[str, torch.Tensor | None]
    image: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    encoded: LxmertSModelOutput


class LxmertSForPreTraining(LxmertSContrastiveFeatures, LxmertSPreTrainedModel):
    """LXMERT-S with the MSP pre-training heads that `config.pretraining_tasks` names.

    Each task is built from `PRETRAINING_TASKS`: its head under `heads.<module_name>`. Task labels are keyword
    arguments named as in each head's `label_names`; a task whose primary label is absent contributes nothing.
    The forward pass runs the encoder, then the extra passes the active tasks read (`ENCODER_PASSES`), then
    each active task's head. Without labels (or with `output_predictions=True`) the output carries the heads'
    predictions at every position.
    """

    def __init__(self, config: LxmertSConfig):
        super().__init__(config)
        check_pretraining_tasks(config.pretraining_tasks, config.loss_weights)
        self.lxmert = LxmertSModel(config)
        self.heads = nn.ModuleDict(
            {
                PRETRAINING_TASKS[task].module_name: PRETRAINING_TASKS[task].head(config)
                for task in config.pretraining_tasks
            }
        )
        # Ties exist only where a head has a word decoder, so the mapping is per instance.
        self._tied_weights_keys = {
            f"heads.{name}.decoder.weight": "lxmert.embeddings.word_embeddings.weight"
            for name, head in self.heads.items()
            if head.tied_to_word_embeddings
        }
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.lxmert.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.lxmert.set_input_embeddings(value)

    def _vocabulary_head(self) -> str | None:
        """The head whose decoder is the output embeddings: the first with a tied word decoder."""
        return next((name for name, head in self.heads.items() if head.tied_to_word_embeddings), None)

    def get_output_embeddings(self) -> nn.Linear | None:
        task = self._vocabulary_head()
        return self.heads[task].decoder if task is not None else None

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.heads[self._vocabulary_head()].decoder = new_embeddings

    def _resize_token_embeddings(
        self, new_num_tokens: int | None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """transformers resizes the word embeddings and the output embeddings; each head resizes its other
        vocabulary-sized parameters (`PretrainingHead.resize_vocabulary`)."""
        embeddings = super()._resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)

        def resize_linear(linear: nn.Linear, size: int) -> nn.Linear:
            return self._get_resized_lm_head(linear, size, mean_resizing=mean_resizing)

        for head in self.heads.values():
            head.resize_vocabulary(embeddings.num_embeddings, resize_linear, mean_resizing)
        return embeddings

    def _features(
        self, encoded: LxmertSModelOutput, attention_mask: torch.Tensor, visual_attention_mask: torch.Tensor
    ) -> EncoderFeatures:
        return EncoderFeatures(
            language_output=encoded.language_output,
            region_output=encoded.vision_output[:, self._first_region :],
            pooled_output=encoded.pooled_output,
            attention_mask=attention_mask,
            visual_attention_mask=visual_attention_mask,
            relation_weights=encoded.relation_weights,
        )

    def _unmasked_text_embeddings(
        self, text: dict[str, torch.Tensor | None], labels: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The text's embeddings before any cross-modal layer, for VSC. MLM's labels put the masked words
        back: the contrastive side should see the caption, as in ALBEF, where contrast and MLM read separate
        passes."""
        input_ids = text["input_ids"]
        if "mlm_labels" in labels:
            input_ids = torch.where(labels["mlm_labels"] != IGNORE_INDEX, labels["mlm_labels"], input_ids)
        return self._text_embeddings(input_ids, text["token_type_ids"], text["position_ids"])

    def _negative_pairs(
        self, features: EncoderFeatures, image_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices (texts, images) of one negative pair per row whose image differs from another row's:
        rows in the first half keep their text and get another row's image, rows in the second half keep their
        image and get another row's text. With the VSC head the partner is sampled in proportion to the
        softmax of the VSC similarity (a hard negative, as MVP and ALBEF mine them), else uniformly; a row
        showing the same image (image_ids equal) is never a partner."""
        batch = len(image_ids)
        other = image_ids[:, None] != image_ids[None, :]
        with torch.no_grad():
            if "vsc" in self.heads and features.text_embeddings is not None:
                similarity = self.heads["vsc"].similarity(features)
                image_weights = torch.softmax(similarity, dim=1) * other
                text_weights = torch.softmax(similarity.T, dim=1) * other.T
            else:
                image_weights = text_weights = other.float()
            # a softmax can underflow to 0 for every partner; and rows without a partner need some weight to
            # sample from (they are dropped below)
            image_weights = torch.where(image_weights.sum(1, keepdim=True) > 0, image_weights, other.float())
            text_weights = torch.where(text_weights.sum(1, keepdim=True) > 0, text_weights, other.T.float())
            has_partner = other.any(1)
            image_weights[~has_partner] = 1.0
            text_weights[~has_partner] = 1.0
            hard_image = torch.multinomial(image_weights, 1).squeeze(1)
            hard_text = torch.multinomial(text_weights, 1).squeeze(1)
        rows = torch.arange(batch, device=image_ids.device)
        first_half = rows < (batch + 1) // 2
        text_index = torch.where(first_half, rows, hard_text)[has_partner]
        image_index = torch.where(first_half, hard_image, rows)[has_partner]
        return text_index, image_index

    def _active_tasks(self, labels: dict[str, torch.Tensor]) -> list[str]:
        tasks = self.config.pretraining_tasks
        readers = label_tasks()
        for name in labels:
            if name not in readers:
                raise ValueError(f"unexpected argument '{name}': not a model input nor a task label")
            if not any(task in tasks for task in readers[name]):
                raise ValueError(
                    f"'{name}' are labels for task(s) {list(readers[name])}, "
                    f"which this model does not carry (config.pretraining_tasks={list(tasks)})"
                )
        active = []
        for task in tasks:
            label_names = PRETRAINING_TASKS[task].head.label_names
            if label_names[0] not in labels:
                continue
            missing = [name for name in label_names if name not in labels]
            if missing:
                raise ValueError(f"task '{task}' got '{label_names[0]}' but not {missing}")
            active.append(task)
        return active

    def _head(self, task: str) -> PretrainingHead:
        return self.heads[PRETRAINING_TASKS[task].module_name]

    def _check_labels(
        self,
        active: list[str],
        labels: dict[str, torch.Tensor],
        input_ids: torch.Tensor,
        visual_feats: torch.Tensor,
    ) -> None:
        checks = LabelChecks(
            enabled=self.config.check_input_values,
            batch=input_ids.shape[0],
            length=input_ids.shape[1],
            regions=visual_feats.shape[1],
        )
        for task in active:
            self._head(task).check_labels(labels, checks)

    def _contrastive_pass(self, features: EncoderFeatures, inputs: EncoderInputs) -> None:
        """VSC's uni-modal embeddings, before any cross-modal layer: the unmasked text's, and the regions'
        from their uncorrupted features when the batch gives them (else the encoder's first hidden states)."""
        features.text_embeddings = self._unmasked_text_embeddings(inputs.text, inputs.labels)
        clean = inputs.labels.get("vsc_visual_feats")
        if clean is None:
            regions = inputs.encoded.vision_hidden_states[0]
        else:
            regions = self.lxmert.encoder.visn_fc(clean, inputs.image["visual_pos"])
        features.region_embeddings = regions[:, self._first_region :]

    def _negative_pairs_pass(self, features: EncoderFeatures, inputs: EncoderInputs) -> None:
        """One negative pair per row, built in the batch (`_negative_pairs`), through the encoder."""
        text_index, image_index = self._negative_pairs(features, inputs.labels["image_ids"])
        negative = self.lxmert(
            **{name: None if value is None else value[text_index] for name, value in inputs.text.items()},
            **{name: value[image_index] for name, value in inputs.image.items()},
            return_dict=True,
        )
        features.negative = self._features(
            negative,
            inputs.text["attention_mask"][text_index],
            inputs.image["visual_attention_mask"][image_index],
        )
        features.negative_pairs = (text_index, image_index)

    def _binding_pass(self, features: EncoderFeatures, inputs: EncoderInputs) -> None:
        """Each caption's binding negative with its own image, for the rows that have one (when the batch
        carries them); the image with its `binding_region_slots` given `binding_region_features` and
        `binding_region_boxes` where the batch carries those."""
        labels = inputs.labels
        if "binding_input_ids" not in labels:
            return
        rows = labels["binding_mask"].bool()
        if not bool(rows.any()):
            return
        image = dict(inputs.image)
        if "binding_region_slots" in labels:
            slots = labels["binding_region_slots"].bool()[:, :, None]
            for name, label in (
                ("visual_feats", "binding_region_features"),
                ("visual_pos", "binding_region_boxes"),
            ):
                image[name] = torch.where(slots, labels[label].to(image[name].dtype), image[name])
        features.binding = self._encode_rows(inputs, rows, labels["binding_input_ids"], image)

    def _relation_question_pass(self, features: EncoderFeatures, inputs: EncoderInputs) -> None:
        """Each text that has a relation to point at (`relation_targets`), with its subject hidden
        (`relation_input_ids`), and its image: the question the relation readout answers for RPT."""
        rows = inputs.labels["relation_targets"].bool().any(1)
        if not bool(rows.any()):
            return
        features.question = self._encode_rows(inputs, rows, inputs.labels["relation_input_ids"], inputs.image)

    def _encode_rows(
        self,
        inputs: EncoderInputs,
        rows: torch.Tensor,
        input_ids: torch.Tensor,
        image: dict[str, torch.Tensor],
    ) -> EncoderFeatures:
        """The encoder's features of the batch's `rows` (B,) with `input_ids` in place of its text's ids and
        `image` (the batch's visual inputs, or a changed copy) as their image: the binding and
        relation-question passes."""
        text = {**inputs.text, "input_ids": input_ids}
        encoded = self.lxmert(
            **{name: None if value is None else value[rows] for name, value in text.items()},
            **{name: value[rows] for name, value in image.items()},
            return_dict=True,
        )
        return self._features(
            encoded, inputs.text["attention_mask"][rows], inputs.image["visual_attention_mask"][rows]
        )

    def _unidirectional_pass(self, features: EncoderFeatures, inputs: EncoderInputs) -> None:
        """FLM's two unidirectional passes over the unmasked text: `flm_labels` hold the original id of every
        word and MLM masks words only, so putting them back undoes MLM's masking in a batch that trains
        both."""
        flm_labels = inputs.labels["flm_labels"]
        text = inputs.text
        passes = self.lxmert.unidirectional_passes(
            input_ids=torch.where(flm_labels != IGNORE_INDEX, flm_labels, text["input_ids"]),
            attention_mask=text["attention_mask"],
            token_type_ids=text["token_type_ids"],
            position_ids=text["position_ids"],
            **inputs.image,
        )
        features.unidirectional_states = passes.hidden_states
        features.position_embeddings = passes.position_embeddings

    def forward(
        self,
        input_ids: torch.Tensor,
        visual_feats: torch.Tensor,
        visual_pos: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        output_predictions: bool | None = None,
        return_dict: bool | None = None,
        **labels: torch.Tensor,
    ) -> LxmertSForPreTrainingOutput | tuple:
        """`output_predictions`: return the heads' predictions at every position (None: when no labels are
        given; training leaves them out, as their vocabulary-sized scores cost memory)."""
        active = self._active_tasks(labels)
        config = self.config
        return_dict = config.return_dict if return_dict is None else return_dict
        output_hidden_states = (
            config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        passes = {name for task in active for name in PRETRAINING_TASKS[task].passes}
        text = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids) if attention_mask is None else attention_mask,
            "token_type_ids": token_type_ids,
            "position_ids": position_ids,
        }
        image = {
            "visual_feats": visual_feats,
            "visual_pos": visual_pos,
            "visual_attention_mask": visual_mask_or_ones(visual_feats, visual_attention_mask),
        }
        # without uncorrupted features, the contrastive pass reads the region embeddings the encoder
        # computes on its way in
        read_embeddings = "contrastive" in passes and "vsc_visual_feats" not in labels
        encoded = self.lxmert(
            **text,
            **image,
            output_hidden_states=output_hidden_states or read_embeddings,
            output_attentions=output_attentions,
            return_dict=True,
        )
        self._check_labels(active, labels, input_ids, visual_feats)
        features = self._features(encoded, text["attention_mask"], image["visual_attention_mask"])
        inputs = EncoderInputs(text, image, labels, encoded)
        for name in ENCODER_PASSES:
            if name in passes:
                getattr(self, f"_{name}_pass")(features, inputs)
        if read_embeddings and not output_hidden_states:
            encoded.language_hidden_states = encoded.vision_hidden_states = None
        losses = {task: self._head(task)(features, labels) for task in active} or None
        loss = (
            sum(self.config.loss_weight(task) * value for task, value in losses.items()) if losses else None
        )
        predict = not active if output_predictions is None else output_predictions
        predictions = {}
        for head in self.heads.values():
            if predict or head.always_predicted:
                predictions.update(head.predictions(features))
        output = LxmertSForPreTrainingOutput(loss=loss, losses=losses, **predictions, **encoded)
        return output if return_dict else output.to_tuple()


class LxmertSForQuestionAnswering(LxmertSPreTrainedModel):
    """VQA v2 / GQA (MSP paper §4.2): LXMERT's answer head on the pooled output.

    `labels` are soft answer scores (B, num_qa_labels) in [0, 1] (VQA: min(n/3, 1) for an answer n
    annotators gave; GQA: one-hot). Loss as LXMERT's and LXMERT-S's VQA/GQA fine-tuning: binary
    cross-entropy with logits averaged over batch x answers, times the number of answers, i.e. summed
    over answers and averaged over the batch. transformers' `LxmertForQuestionAnswering` instead takes
    one answer index per question with cross-entropy, which cannot express VQA's soft scores.
    """

    def __init__(self, config: LxmertSConfig):
        super().__init__(config)
        self.lxmert = LxmertSModel(config)
        self.answer_head = LxmertSClassificationHead(config, config.hidden_size, config.num_qa_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        visual_feats: torch.Tensor,
        visual_pos: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> LxmertSTaskOutput | tuple:
        return_dict = self.config.return_dict if return_dict is None else return_dict
        encoded = self.lxmert(
            input_ids=input_ids,
            visual_feats=visual_feats,
            visual_pos=visual_pos,
            attention_mask=attention_mask,
            visual_attention_mask=visual_attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        logits = self.answer_head(encoded.pooled_output)
        loss = None
        if labels is not None:
            check_shape("labels", labels, Shape(tuple(logits.shape), ("batch", "num_qa_labels")))
            ValueChecks(self.config.check_input_values).unit_interval("labels", labels, "soft answer scores")
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float()) * logits.shape[1]
        output = LxmertSTaskOutput(loss=loss, logits=logits, **_encoder_extras(encoded))
        return output if return_dict else output.to_tuple()


class LxmertSForVisualReasoning(LxmertSPreTrainedModel):
    """NLVR2 (MSP paper §4.2): is a sentence true of a pair of images?

    Visual inputs carry the pair axis: `visual_feats` (B, 2, R, F), `visual_pos` (B, 2, R, 4),
    `visual_attention_mask` (B, 2, R); the text (B, L) is shared by both images. As LXMERT's NLVR2
    model, the encoder runs once over the 2B (sentence, image) rows, the two pooled outputs of an
    example are concatenated in image order, [image 0, image 1] (B, 2H), and classified false/true;
    `labels` (B,) in {0, 1}, cross-entropy.
    """

    def __init__(self, config: LxmertSConfig):
        super().__init__(config)
        self.lxmert = LxmertSModel(config)
        self.classifier = LxmertSClassificationHead(config, 2 * config.hidden_size, 2)
        self.post_init()

    def _check_image_pairs(
        self,
        input_ids: torch.Tensor,
        visual_feats: torch.Tensor,
        visual_pos: torch.Tensor,
        visual_attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> None:
        """The checks of the pair axis, so that errors name the shapes the caller passed; the encoder
        checks the rest on the flattened rows."""
        if input_ids.dim() != 2:
            raise shape_error("input_ids", "(batch, length)", input_ids.shape)
        batch = input_ids.shape[0]
        feat_dim = self.config.visual_feat_dim
        if (
            visual_feats.dim() != 4
            or visual_feats.shape[:2] != (batch, 2)
            or visual_feats.shape[3] != feat_dim
        ):
            raise shape_error("visual_feats", f"({batch}, 2, regions, {feat_dim})", visual_feats.shape)
        regions = visual_feats.shape[2]
        expected_pos = (batch, 2, regions, self.config.visual_pos_dim)
        if visual_pos.shape != expected_pos:
            raise shape_error("visual_pos", f"{expected_pos}", visual_pos.shape)
        if visual_attention_mask is not None and visual_attention_mask.shape != (batch, 2, regions):
            raise shape_error("visual_attention_mask", f"{(batch, 2, regions)}", visual_attention_mask.shape)
        if labels is not None:
            check_shape("labels", labels, Shape((batch,), ("batch",)))
            check_dtype("labels", labels, "class ids")
            ValueChecks(self.config.check_input_values).ids("labels", labels, 2, "0 false, 1 true")

    def forward(
        self,
        input_ids: torch.Tensor,
        visual_feats: torch.Tensor,
        visual_pos: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> LxmertSTaskOutput | tuple:
        self._check_image_pairs(input_ids, visual_feats, visual_pos, visual_attention_mask, labels)
        return_dict = self.config.return_dict if return_dict is None else return_dict

        # Row 2b + i pairs sentence b with its image i, so a view (B, 2H) puts an example's two
        # pooled outputs side by side.
        def per_image(text: torch.Tensor | None) -> torch.Tensor | None:
            return None if text is None else text.repeat_interleave(2, dim=0)

        if visual_attention_mask is not None:
            visual_attention_mask = visual_attention_mask.flatten(0, 1)
        encoded = self.lxmert(
            input_ids=per_image(input_ids),
            visual_feats=visual_feats.flatten(0, 1),
            visual_pos=visual_pos.flatten(0, 1),
            attention_mask=per_image(attention_mask),
            visual_attention_mask=visual_attention_mask,
            token_type_ids=per_image(token_type_ids),
            position_ids=per_image(position_ids),
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        logits = self.classifier(encoded.pooled_output.view(input_ids.shape[0], -1))
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        output = LxmertSTaskOutput(loss=loss, logits=logits, **_encoder_extras(encoded))
        return output if return_dict else output.to_tuple()


class LxmertSForImageTextRetrieval(LxmertSContrastiveFeatures, LxmertSPreTrainedModel):
    """Image-text retrieval (MSP paper §4.2): the pre-trained ITM head as a matching score.

    The head keeps the pre-training model's ITM module and key (`heads.itm.classifier`), so a
    pre-training checkpoint loads into it whole: with no fine-tuning it gives the zero-shot score, and
    a fine-tuned checkpoint loads back into `LxmertSForPreTraining`. `logits` (B,) = match logit minus
    mismatch logit, the logit of the ITM softmax's match probability: it ranks pairs as that
    probability does, and `sigmoid(logits)` is it. (The released LXMERT-S zero-shot script ranked by the
    raw match logit, which can order pairs differently.) `labels` (B,) float, 1 = match: binary
    cross-entropy on `sigmoid(logits)`. The released fine-tuning took BCE over both softmax columns
    times 2, which is exactly twice this loss.

    When `config.pretraining_tasks` holds `vsc` (a checkpoint pre-trained with it), the model also carries the
    VSC head (`heads.vsc`, loaded from the checkpoint) and its `get_text_features` / `get_image_features`, so
    that retrieval ranks every pair by their similarity and re-scores only the top candidates with `logits`
    (`lxmert_s_msp.evaluation.retrieval`). Fine-tuning trains the ITM score only; the VSC head stays as
    pre-trained.
    """

    def __init__(self, config: LxmertSConfig):
        super().__init__(config)
        self.lxmert = LxmertSModel(config)
        heads = {"itm": ImageTextMatchingHead(config)}
        if "vsc" in config.pretraining_tasks:
            heads["vsc"] = VisualSemanticContrastiveHead(config)
        self.heads = nn.ModuleDict(heads)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        visual_feats: torch.Tensor,
        visual_pos: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> LxmertSTaskOutput | tuple:
        return_dict = self.config.return_dict if return_dict is None else return_dict
        encoded = self.lxmert(
            input_ids=input_ids,
            visual_feats=visual_feats,
            visual_pos=visual_pos,
            attention_mask=attention_mask,
            visual_attention_mask=visual_attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        mismatch, match = self.heads["itm"].logits(encoded.pooled_output).unbind(-1)
        logits = match - mismatch
        loss = None
        if labels is not None:
            check_shape("labels", labels, Shape(tuple(logits.shape), ("batch",)))
            ValueChecks(self.config.check_input_values).unit_interval("labels", labels, "match targets")
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        output = LxmertSTaskOutput(loss=loss, logits=logits, **_encoder_extras(encoded))
        return output if return_dict else output.to_tuple()


__all__ = [
    "LxmertSContrastiveFeatures",
    "LxmertSForImageTextRetrieval",
    "LxmertSForPreTraining",
    "LxmertSForPreTrainingOutput",
    "LxmertSForQuestionAnswering",
    "LxmertSForVisualReasoning",
    "LxmertSModel",
    "LxmertSModelOutput",
    "LxmertSPreTrainedModel",
    "LxmertSTaskOutput",
    "LxmertSUnidirectionalOutput",
]
