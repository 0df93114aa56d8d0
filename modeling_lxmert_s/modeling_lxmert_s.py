"""LXMERT-S: LXMERT's cross-modality encoder alone (Liu et al., ACL 2021, §3, Fig. 2).

Text embeddings and projected region features enter `num_layers` cross-modality layers directly.
Module names follow `transformers`' LXMERT (`encoder.visn_fc`, `encoder.x_layers.N.visual_attention`,
...) so that LXMERT checkpoints map onto this model by key, see `convert_lxmert.py`. Attention goes
through transformers' attention interface: SDPA by default, eager on request, and eager for a call that asks
for the attention weights (`output_attentions=True`), which SDPA does not return.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, logging

from .configuration_lxmert_s import LxmertSConfig, head_module_name
from .input_checks import IGNORE_INDEX, LabelChecks, Shape, ValueChecks, check_dtype, check_shape, shape_error
from .pretraining_heads import (
    HEADS,
    LABEL_TASKS,
    EncoderFeatures,
    FreeLanguageModelingHead,
    ImageTextMatchingHead,
    MaskedLanguageModelingHead,
    TopicHead,
    VisualSemanticContrastiveHead,
    word_region_similarity,
)

logger = logging.get_logger(__name__)

# The released code's visual [CLS] covers the whole image.
VISUAL_CLS_BOX = (0.0, 0.0, 1.0, 1.0)


@dataclass
class LxmertSModelOutput(ModelOutput):
    """Named as transformers' `LxmertModelOutput`.

    language_output: (B, L, H). vision_output: (B, R', H) with R' = R + 1 when the model prepends its
    visual [CLS] (then at index 0). pooled_output: (B, H), the multimodal representation every head
    reads. Hidden states: the embeddings, then each layer's output. Attentions (from eager attention, which
    a call asking for them runs under SDPA too): per layer, text self-attention, region self-attention, and
    text-to-region cross-attention.
    """

    language_output: torch.Tensor | None = None
    vision_output: torch.Tensor | None = None
    pooled_output: torch.Tensor | None = None
    language_hidden_states: tuple[torch.Tensor, ...] | None = None
    vision_hidden_states: tuple[torch.Tensor, ...] | None = None
    language_attentions: tuple[torch.Tensor, ...] | None = None
    vision_attentions: tuple[torch.Tensor, ...] | None = None
    cross_encoder_attentions: tuple[torch.Tensor, ...] | None = None


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
    regions, without the visual [CLS]).
    Then the encoder's outputs, as `LxmertSModelOutput`."""

    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None
    prediction_logits: torch.Tensor | None = None
    itm_logits: torch.Tensor | None = None
    object_logits: torch.Tensor | None = None
    attribute_logits: torch.Tensor | None = None
    region_feature_predictions: torch.Tensor | None = None
    language_output: torch.Tensor | None = None
    vision_output: torch.Tensor | None = None
    pooled_output: torch.Tensor | None = None
    language_hidden_states: tuple[torch.Tensor, ...] | None = None
    vision_hidden_states: tuple[torch.Tensor, ...] | None = None
    language_attentions: tuple[torch.Tensor, ...] | None = None
    vision_attentions: tuple[torch.Tensor, ...] | None = None
    cross_encoder_attentions: tuple[torch.Tensor, ...] | None = None


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
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        query = self.query(hidden_states).unflatten(-1, (-1, self.head_dim)).transpose(1, 2)
        key = self.key(context).unflatten(-1, (-1, self.head_dim)).transpose(1, 2)
        value = self.value(context).unflatten(-1, (-1, self.head_dim)).transpose(1, 2)
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
        return output.flatten(-2), weights


class LxmertSAttentionOutput(nn.Module):
    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class LxmertSCrossAttentionLayer(nn.Module):
    """Cross-attention sub-layer; one instance serves both directions (text->regions, regions->text)."""

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.att = LxmertSAttention(config)
        self.output = LxmertSAttentionOutput(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.att(hidden_states, context, context_mask, output_attentions)
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
        attended, weights = self.self(hidden_states, hidden_states, attention_mask, output_attentions)
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
        self.visual_attention = LxmertSCrossAttentionLayer(config)
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
    ) -> tuple[torch.Tensor, ...]:
        """`vision_sees_language=False` (FLM's unidirectional passes): the regions' cross-attention reads the
        regions instead of the text, so the image side carries no word to a word that must not see it.
        `output_attentions`: return the weights of text self-, region self- and text-to-region attention."""
        lang_cross, cross_weights = self.visual_attention(
            lang_feats, visual_feats, visual_mask, output_attentions
        )
        if vision_sees_language:
            visual_cross, _ = self.visual_attention(visual_feats, lang_feats, lang_mask)
        else:
            visual_cross, _ = self.visual_attention(visual_feats, visual_feats, visual_mask)
        lang_self, lang_weights = self.lang_self_att(lang_cross, lang_mask, output_attentions)
        visual_self, visual_weights = self.visn_self_att(visual_cross, visual_mask, output_attentions)
        lang_out = self.lang_output(self.lang_inter(lang_self), lang_self)
        visual_out = self.visn_output(self.visn_inter(visual_self), visual_self)
        return lang_out, visual_out, lang_weights, visual_weights, cross_weights


class LxmertSEncoder(nn.Module):
    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.visn_fc = LxmertSVisualFeatureEncoder(config)
        self.x_layers = nn.ModuleList(LxmertSCrossModalityLayer(config) for _ in range(config.num_layers))


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


class LxmertSPooler(nn.Module):
    """Dense + tanh on the first position of a stream."""

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


class LxmertSAlignmentPooler(nn.Module):
    """The pooled output from word-region alignment (`config.pooler_type="alignment"`), not in LXMERT-S.

    A [CLS] can only report a match once the layers have learned to compare each word with the region it
    matches and gather the comparisons into it; trained from scratch, the small model never got there
    (docs/results.md). This pooler makes the comparison explicit: for each word w (every real token but
    [CLS]), the cosine similarities s_wr of its output with the region outputs give a_w, the regions averaged
    with softmax(s_w / `alignment_temperature`) (what the word found), and f_w = max_r s_wr (how well it
    matched); learned weights beta = softmax_w(u . h_w) pick the words that matter, and

        pooled = tanh(W [sum_w beta_w h_w ; sum_w beta_w a_w ; SCORE_SCALE sum_w beta_w f_w]).

    WPG trains the similarities it reads.
    """

    # The match score is one input beside 2H others: scaled so that it is not lost among them at init.
    SCORE_SCALE = 5.0

    def __init__(self, config: LxmertSConfig):
        super().__init__()
        self.word_weight = nn.Linear(config.hidden_size, 1)
        self.dense = nn.Linear(2 * config.hidden_size + 1, config.hidden_size)
        self.activation = nn.Tanh()
        self.temperature = config.alignment_temperature

    def forward(
        self,
        language_output: torch.Tensor,
        region_output: torch.Tensor,
        attention_mask: torch.Tensor,
        visual_attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        similarity = word_region_similarity(language_output, region_output, visual_attention_mask)
        found = (
            torch.softmax(similarity.float() / self.temperature, dim=-1).to(region_output.dtype)
            @ region_output
        )
        words = attention_mask.bool().clone()
        words[:, 0] = False  # the [CLS]
        scores = self.word_weight(language_output).squeeze(-1).float().masked_fill(~words, float("-inf"))
        beta = torch.softmax(scores, dim=-1).nan_to_num(0.0).to(language_output.dtype)[..., None]
        match = (beta[..., 0] * similarity.max(-1).values.to(beta.dtype)).sum(1, keepdim=True)
        pooled = torch.cat(
            [(beta * language_output).sum(1), (beta * found).sum(1), self.SCORE_SCALE * match], -1
        )
        return self.activation(self.dense(pooled))


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
    not used. Both are expected, so one line names them (`fresh_parameters` lists the fresh heads'
    parameters) instead of transformers' table of every key; a head only partly in the checkpoint and any
    encoder key are reported by transformers as usual."""

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

    def _adjust_missing_and_unexpected_keys(self, loading_info) -> None:
        """transformers' hook between loading a checkpoint and reporting its missing and unexpected keys."""
        super()._adjust_missing_and_unexpected_keys(loading_info)
        tied = set(self._tied_weights_keys or {})
        loaded = set(self.state_dict()) - loading_info.missing_keys - tied
        fresh = (
            {head_of(key) for key in loading_info.missing_keys} - {head_of(key) for key in loaded} - {None}
        )
        own = {head_of(key) for key in self.state_dict()}
        unused = {head_of(key) for key in loading_info.unexpected_keys} - own - {None}
        loading_info.missing_keys = {key for key in loading_info.missing_keys if head_of(key) not in fresh}
        loading_info.unexpected_keys = {
            key for key in loading_info.unexpected_keys if head_of(key) not in unused
        }
        self.fresh_parameters = frozenset(
            name for name, _ in self.named_parameters() if head_of(name) in fresh
        )
        news = [f"heads {', '.join(sorted(fresh))} start fresh"] if fresh else []
        news += [f"the checkpoint's heads {', '.join(sorted(unused))} are not used"] if unused else []
        if news:
            logger.warning(f"{type(self).__name__}: " + "; ".join(news))

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, (MaskedLanguageModelingHead, FreeLanguageModelingHead)):
            init.zeros_(module.bias)
        elif isinstance(module, LxmertSReconstructor):
            init.normal_(module.mask_embedding, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, VisualSemanticContrastiveHead):
            init.constant_(module.logit_scale, math.log(1 / self.config.contrastive_temperature))
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

    def _check_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        visual_feats: torch.Tensor,
        visual_pos: torch.Tensor,
        visual_attention_mask: torch.Tensor | None,
    ) -> None:
        """Shapes and dtypes here; values on the device (`input_checks.ValueChecks`)."""
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
        if visual_feats.dim() != 3 or visual_feats.shape[0] != batch:
            raise shape_error(
                "visual_feats", f"({batch}, regions, {config.visual_feat_dim})", visual_feats.shape
            )
        if visual_feats.shape[-1] != config.visual_feat_dim:
            raise shape_error(
                "visual_feats",
                f"(batch, regions, {config.visual_feat_dim}) [visual_feat_dim]",
                visual_feats.shape,
            )
        regions = visual_feats.shape[1]
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
        values.ids("input_ids", input_ids, self.embeddings.word_embeddings.num_embeddings, "vocab_size")
        if token_type_ids is not None:
            values.ids("token_type_ids", token_type_ids, config.type_vocab_size, "type_vocab_size")
        if position_ids is not None:
            values.ids(
                "position_ids", position_ids, config.max_position_embeddings, "max_position_embeddings"
            )
        if attention_mask is not None:
            values.padding_mask("attention_mask", attention_mask, "token")
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
        self._check_inputs(
            input_ids,
            attention_mask,
            token_type_ids,
            position_ids,
            visual_feats,
            visual_pos,
            visual_attention_mask,
        )
        batch = len(input_ids)
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

        lang_states, visual_states = (lang,), (visual,)
        lang_attentions, visual_attentions, cross_attentions = (), (), ()
        for layer in self.encoder.x_layers:
            lang, visual, lang_weights, visual_weights, cross_weights = layer(
                lang, lang_mask, visual, visual_mask, output_attentions=output_attentions
            )
            lang_states += (lang,)
            visual_states += (visual,)
            lang_attentions += (lang_weights,)
            visual_attentions += (visual_weights,)
            cross_attentions += (cross_weights,)

        if self.config.pooler_type == "alignment":
            first_region = 1 if self.config.visual_cls_token else 0
            pooled = self.pooler(
                lang, visual[:, first_region:], attention_mask, visual_attention_mask[:, first_region:]
            )
        else:
            pooled = self.pooler(lang)
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
        states = ()
        for layer in self.encoder.x_layers:
            lang, visual, *_ = layer(lang, lang_mask, visual, visual_mask, vision_sees_language=False)
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
    ) -> torch.Tensor:
        """(B, D) L2-normalised VSC text embeddings (as CLIP's `get_text_features`): their dot product with
        `get_image_features` ranks images and texts with no cross-modal pass (needs the `vsc` head)."""
        head = self._contrastive_head()
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeddings = self._text_embeddings(input_ids, token_type_ids, position_ids)
        return head.text_embeds(embeddings, attention_mask)

    def get_image_features(
        self,
        visual_feats: torch.Tensor,
        visual_pos: torch.Tensor,
        visual_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, D) L2-normalised VSC image embeddings (see `get_text_features`)."""
        head = self._contrastive_head()
        regions = self.lxmert.encoder.visn_fc(visual_feats, visual_pos)[:, self._first_region :]
        return head.image_embeds(regions, visual_mask_or_ones(visual_feats, visual_attention_mask))

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


class LxmertSForPreTraining(LxmertSContrastiveFeatures, LxmertSPreTrainedModel):
    """LXMERT-S with the MSP pre-training heads that `config.pretraining_tasks` names.

    Task labels are keyword arguments named as in each head's `label_names` (see
    `pretraining_heads.py`); a task whose primary label is absent contributes nothing. Without labels (or
    with `output_predictions=True`) the output carries the heads' predictions at every position.
    """

    def __init__(self, config: LxmertSConfig):
        super().__init__(config)
        self.lxmert = LxmertSModel(config)
        self.heads = nn.ModuleDict(
            {head_module_name(task): HEADS[task](config) for task in config.pretraining_tasks}
        )
        # The ties exist only where the MLM / FLM heads do, so the mapping is per instance.
        self._tied_weights_keys = {
            f"heads.{task}.decoder.weight": "lxmert.embeddings.word_embeddings.weight"
            for task in ("mlm", "flm")
            if task in self.heads
        }
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.lxmert.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.lxmert.set_input_embeddings(value)

    def _vocabulary_head(self) -> str | None:
        """The head whose decoder is the output embeddings: MLM's, else FLM's."""
        return next((task for task in ("mlm", "flm") if task in self.heads), None)

    def get_output_embeddings(self) -> nn.Linear | None:
        task = self._vocabulary_head()
        return self.heads[task].decoder if task is not None else None

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.heads[self._vocabulary_head()].decoder = new_embeddings

    def _resize_token_embeddings(
        self, new_num_tokens: int | None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """transformers resizes the word embeddings and the output embeddings; this resizes every other
        vocabulary-sized parameter: the other decoder, the MLM and FLM biases and the TITP / TITS layers."""
        embeddings = super()._resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        size = embeddings.num_embeddings
        for head in self.heads.values():
            if isinstance(head, (MaskedLanguageModelingHead, FreeLanguageModelingHead)):
                # the same decoder when its size is right already (as the output embeddings' is)
                head.decoder = self._get_resized_lm_head(head.decoder, size, mean_resizing=mean_resizing)
                if len(head.bias) != size:
                    fill = head.bias.detach().mean() if mean_resizing else 0.0
                    head.bias = _resized_vector(head.bias, size, fill)
            elif isinstance(head, TopicHead) and head.dense.out_features != size:
                head.dense = self._get_resized_lm_head(head.dense, size, mean_resizing=mean_resizing)
                norm = nn.LayerNorm(size, eps=head.LayerNorm.eps)
                norm.weight = _resized_vector(head.LayerNorm.weight, size, 1.0)
                norm.bias = _resized_vector(head.LayerNorm.bias, size, 0.0)
                head.LayerNorm = norm
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
        for name in labels:
            if name not in LABEL_TASKS:
                raise ValueError(f"unexpected argument '{name}': not a model input nor a task label")
            if not any(task in tasks for task in LABEL_TASKS[name]):
                raise ValueError(
                    f"'{name}' are labels for task(s) {list(LABEL_TASKS[name])}, "
                    f"which this model does not carry (config.pretraining_tasks={list(tasks)})"
                )
        active = []
        for task in tasks:
            label_names = HEADS[task].label_names
            if label_names[0] not in labels:
                continue
            missing = [name for name in label_names if name not in labels]
            if missing:
                raise ValueError(f"task '{task}' got '{label_names[0]}' but not {missing}")
            active.append(task)
        return active

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
            self.heads[head_module_name(task)].check_labels(labels, checks)

    def _predictions(self, features: EncoderFeatures) -> dict[str, torch.Tensor]:
        """The heads' predictions at every position, for inference (`LxmertSForPreTrainingOutput`)."""
        predictions = {}
        if "mlm" in self.heads:
            predictions["prediction_logits"] = self.heads["mlm"].logits(features.language_output)
        if "moc" in self.heads:
            predictions["object_logits"], predictions["attribute_logits"] = self.heads["moc"].logits(features)
        if "mrfr" in self.heads:
            predictions["region_feature_predictions"] = self.heads["mrfr"].predict(features)
        return predictions

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
        return_dict = self.config.return_dict if return_dict is None else return_dict
        contrastive = bool({"vsc", "itm_vsc"} & set(active))
        text = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids) if attention_mask is None else attention_mask,
            "token_type_ids": token_type_ids,
            "position_ids": position_ids,
        }
        visual_attention_mask = visual_mask_or_ones(visual_feats, visual_attention_mask)
        image = {
            "visual_feats": visual_feats,
            "visual_pos": visual_pos,
            "visual_attention_mask": visual_attention_mask,
        }
        encoded = self.lxmert(
            **text,
            **image,
            output_hidden_states=output_hidden_states or contrastive,
            output_attentions=output_attentions,
            return_dict=True,
        )
        self._check_labels(active, labels, input_ids, visual_feats)
        features = self._features(encoded, text["attention_mask"], visual_attention_mask)
        if contrastive:
            features.text_embeddings = self._unmasked_text_embeddings(text, labels)
            features.region_embeddings = encoded.vision_hidden_states[0][:, self._first_region :]
            if not output_hidden_states:
                encoded.language_hidden_states = encoded.vision_hidden_states = None
        if {"wpg", "itm_vsc"} & set(active):
            text_index, image_index = self._negative_pairs(features, labels["image_ids"])
            negative = self.lxmert(
                **{name: None if value is None else value[text_index] for name, value in text.items()},
                **{name: value[image_index] for name, value in image.items()},
                return_dict=True,
            )
            features.negative = self._features(
                negative, text["attention_mask"][text_index], visual_attention_mask[image_index]
            )
            features.negative_pairs = (text_index, image_index)
        if "flm" in active:
            flm_labels = labels["flm_labels"]
            # FLM reads the unmasked text: `flm_labels` hold the original id of every word and MLM masks
            # words only, so putting them back undoes MLM's masking in a batch that trains both.
            passes = self.lxmert.unidirectional_passes(
                input_ids=torch.where(flm_labels != IGNORE_INDEX, flm_labels, input_ids),
                visual_feats=visual_feats,
                visual_pos=visual_pos,
                attention_mask=attention_mask,
                visual_attention_mask=visual_attention_mask,
                token_type_ids=token_type_ids,
                position_ids=position_ids,
            )
            features.unidirectional_states = passes.hidden_states
            features.position_embeddings = passes.position_embeddings
        losses = {task: self.heads[head_module_name(task)](features, labels) for task in active} or None
        loss = (
            sum(self.config.loss_weight(task) * value for task, value in losses.items()) if losses else None
        )
        itm_logits = self.heads["itm"].logits(features.pooled_output) if "itm" in self.heads else None
        predict = not active if output_predictions is None else output_predictions
        output = LxmertSForPreTrainingOutput(
            loss=loss,
            losses=losses,
            itm_logits=itm_logits,
            **(self._predictions(features) if predict else {}),
            **encoded,
        )
        return output if return_dict else output.to_tuple()


def _resized_vector(vector: torch.Tensor, size: int, fill: float | torch.Tensor) -> nn.Parameter:
    """A vocabulary-sized vector cut or extended to `size`, its new entries `fill`."""
    resized = vector.detach().new_empty(size)
    kept = min(size, len(vector))
    resized[:kept] = vector.detach()[:kept]
    resized[kept:] = fill
    return nn.Parameter(resized, requires_grad=vector.requires_grad)


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
