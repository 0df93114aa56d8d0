"""Configuration of LXMERT-S, the simplified LXMERT of Liu et al. (ACL 2021, §3, Fig. 2).

LXMERT-S keeps only LXMERT's cross-modality encoder: text embeddings and region features enter the
5 cross-modality layers directly. Four switches choose between the model the LXMERT-S authors
released (the defaults, which produced the paper's numbers) and plain "LXMERT minus two encoders",
which `LxmertSConfig.from_lxmert_config` selects and which matches `transformers.LxmertModel`
numerically.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# Every Auto class a saved folder answers to; save_pretrained only adds the saved model's own class.
AUTO_MAP = {
    "AutoConfig": "configuration_lxmert_s.LxmertSConfig",
    "AutoModel": "modeling_lxmert_s.LxmertSModel",
    "AutoModelForPreTraining": "modeling_lxmert_s.LxmertSForPreTraining",
    "AutoModelForQuestionAnswering": "modeling_lxmert_s.LxmertSForQuestionAnswering",
    "AutoModelForVisualQuestionAnswering": "modeling_lxmert_s.LxmertSForQuestionAnswering",
}


@strict
class LxmertSConfig(PreTrainedConfig):
    r"""
    Sizes follow LXMERT/BERT-base; the encoder is `num_layers` cross-modality layers (also readable and
    settable as transformers' common `num_hidden_layers`).

    visual_cls_token (`bool`, defaults to `True`):
        Prepend one learned `visual_feat_dim` vector with box `[0, 0, 1, 1]` to the regions, as the
        released LXMERT-S code does; the visual sequence is then one longer and its first output is
        the visual [CLS]. `False`: LXMERT's behaviour, regions only.
    pooler_type (`"product"`, `"language"` or `"alignment"`, defaults to `"product"`):
        `"product"`: tanh(W_l h_lang[CLS]) * tanh(W_v h_vis[CLS]) (released code, needs the visual
        [CLS]); `"language"`: LXMERT's dense + tanh on the language [CLS]; `"alignment"`: pooled from
        each word's cosine alignment with the regions (`LxmertSAlignmentPooler`, not in LXMERT-S: a
        readout that compares each word with the region it matches instead of reading a [CLS] alone).
    alignment_temperature (`float`, defaults to 0.1):
        Temperature of the alignment pooler's softmax over a word's region cosine similarities.
    position_ids_type (`"word"` or `"absolute"`, defaults to `"word"`):
        `"word"`: one position per whitespace word, shared by its WordPieces, computed by
        `LxmertSProcessor` (the model cannot recover word boundaries from ids, so it requires
        `position_ids` in this mode); `"absolute"`: BERT's 0..L-1, the default when none are given.
    visual_geometry_bias (`bool`, defaults to `False`):
        Add to the region self-attention a bias learned from each pair of regions' relative geometry
        (`LxmertSRegionGeometry`, not in LXMERT-S), so that a region can gather what lies left of, above, ...
        it; `False`: LXMERT's attention, where boxes enter only through the region embeddings.
    text_reads_boxes (`bool`, defaults to `False`):
        The text-to-region cross-attention also gives each word the attention-weighted mean of the regions'
        box centres and sizes, per head (`LxmertSCrossAttentionLayer`, not in LXMERT-S), so that a word can
        know where the object it found is (on the synthetic world it does not learn to keep it:
        docs/results.md); `False`: LXMERT's, where a box reaches a word only inside a region's value.
    alignment_counts (`bool`, defaults to `False`):
        The alignment pooler also reads how many regions each word matches (a soft count,
        `LxmertSAlignmentPooler`), which an average or a maximum over regions cannot express.
    alignment_relations (`bool`, defaults to `False`):
        The alignment pooler also reads the region that lies where the text points relative to the object it
        names (`LxmertSRelationReadout`): "what is left of the cup" needs the cup's place and every other
        region's place compared with it, which no word's state holds (docs/results.md).
    gate_region_heads (`bool`, defaults to `True`):
        Region heads (MRFR, MOC, IFRS) read `transform(h_v) * pooled_output` as the released code
        does; `False` reads `transform(h_v)` as LXMERT.
    pretraining_tasks (`list[str]`):
        The heads `LxmertSForPreTraining` carries, tasks of its registry `PRETRAINING_TASKS`, which checks
        the list when the model is built. A checkpoint meant to go through every MSP stage carries the union
        of the stages' tasks. `itm` (random negatives), `itm_hs` (hard negatives) and `itm_vsc` (negatives
        mined in the batch) train the same module `heads.itm`; a config lists one.
    loss_weights (`dict[str, float]`):
        Weight of each task's loss in the total; a task not named weighs 1.0.
    moc_masked_regions_only (`bool`, defaults to `False`):
        `False`: object/attribute classification on every region weighted by detector confidence
        (LXMERT and the LXMERT-S code); `True`: only at masked regions (the paper's wording).
    visual_loss_normalizer (`float`, defaults to 6.67):
        LXMERT's factor (about 1/0.15) on the MRFR and MOC losses.
    flm_reconstructor_layers (`int`, defaults to 1):
        Depth of FLM's reconstructor (cross-attention + feed-forward layers). As in the FLM code, its layer
        t reads the two unidirectional passes after encoder layer `num_layers - flm_reconstructor_layers + t`,
        so it can be at most `num_layers`.
    flm_corruption_rate (`float`, defaults to 0.0):
        FLM's corruption rate r in [0, 1]: in training, besides its own word, each target hides from the
        reconstructor a span of on average r x (tokens after [CLS]) - 1 neighbouring tokens, one always
        kept (`reconstructor_key_mask` gives the rule). The released FLM recipe uses 0.
    flm_directional_losses (`bool`, defaults to `False`):
        Add FLM's auxiliary losses: next word from the left-to-right pass, previous word from the
        right-to-left pass; the FLM loss is then the mean of the three.
    contrastive_dim (`int`, *optional*):
        Size of the VSC embeddings (`get_text_features` / `get_image_features`); `hidden_size` when None.
    contrastive_temperature (`float`, defaults to 0.07):
        Initial temperature of the VSC softmax (learned, as CLIP's; the logit scale starts at 1/0.07).
    grounding_margin (`float`, defaults to 0.2):
        WPG's hinge margin between a concept word's best region in its image and in a negative one (MVP).
    num_qa_labels (`int`, defaults to 3129):
        Size of the answer vocabulary of `LxmertSForQuestionAnswering` (LXMERT's VQA v2 answer set; a
        GQA answer set differs).
    check_input_values (`bool`, defaults to `True`):
        Check the values of inputs and labels (finite features, boxes in [0, 1], ids and labels in range, a
        real token and region in every row) on their device, without a host sync (`input_checks.py`); a
        failure names the argument. `False` skips these checks (shapes and dtypes are always checked).
    """

    model_type = "lxmert_s"
    attribute_map: ClassVar[dict[str, str]] = {"num_hidden_layers": "num_layers"}

    vocab_size: int = 30522
    hidden_size: int = 768
    num_attention_heads: int = 12
    num_layers: int = 5
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    tie_word_embeddings: bool = True

    visual_feat_dim: int = 2048
    visual_pos_dim: int = 4
    num_object_labels: int = 1600
    num_attr_labels: int = 400

    visual_cls_token: bool = True
    pooler_type: Literal["product", "language", "alignment"] = "product"
    alignment_temperature: float = 0.1
    position_ids_type: Literal["word", "absolute"] = "word"
    gate_region_heads: bool = True
    visual_geometry_bias: bool = False
    text_reads_boxes: bool = False
    alignment_counts: bool = False
    alignment_relations: bool = False

    pretraining_tasks: list[str] | None = None
    loss_weights: dict[str, float] | None = None
    moc_masked_regions_only: bool = False
    visual_loss_normalizer: float = 6.67
    flm_reconstructor_layers: int = 1
    flm_corruption_rate: float | int = 0.0
    flm_directional_losses: bool = False
    contrastive_dim: int | None = None
    contrastive_temperature: float = 0.07
    grounding_margin: float = 0.2

    num_qa_labels: int = 3129
    check_input_values: bool = True

    def __post_init__(self, **kwargs):
        if self.pretraining_tasks is None:
            self.pretraining_tasks = ["mlm", "mrfr", "moc", "itm"]
        self.pretraining_tasks = list(self.pretraining_tasks)
        self.loss_weights = dict(self.loss_weights or {})
        kwargs["auto_map"] = {**AUTO_MAP, **(kwargs.get("auto_map") or {})}
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Refuse combinations the model cannot build, naming the field at fault."""
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.pooler_type == "product" and not self.visual_cls_token:
            raise ValueError("pooler_type='product' pools the visual [CLS]: it needs visual_cls_token=True")
        if not 1 <= self.flm_reconstructor_layers <= self.num_layers:
            raise ValueError(
                f"flm_reconstructor_layers ({self.flm_reconstructor_layers}) must be between 1 and "
                f"num_layers ({self.num_layers}): each reconstructor layer reads one encoder layer"
            )
        if not 0.0 <= self.flm_corruption_rate <= 1.0:
            raise ValueError(f"flm_corruption_rate ({self.flm_corruption_rate}) must be in [0, 1]")
        if self.alignment_relations and self.pooler_type != "alignment":
            raise ValueError(
                "alignment_relations is a part of the alignment pooler: set pooler_type='alignment'"
            )
        if "rpt" in (self.pretraining_tasks or []) and not self.alignment_relations:
            raise ValueError(
                "pretraining_tasks: 'rpt' trains the relation readout: set alignment_relations=True"
            )
        if self.num_qa_labels < 1:
            raise ValueError(f"num_qa_labels ({self.num_qa_labels}) must be at least 1")
        if not self.alignment_temperature > 0.0:
            raise ValueError(f"alignment_temperature ({self.alignment_temperature}) must be positive")
        if not self.contrastive_temperature > 0.0:
            raise ValueError(f"contrastive_temperature ({self.contrastive_temperature}) must be positive")

    def loss_weight(self, task: str) -> float:
        return float(self.loss_weights.get(task, 1.0))

    @classmethod
    def from_lxmert_config(cls, lxmert_config, **kwargs) -> LxmertSConfig:
        """The LXMERT-compatible setting with the sizes of a `transformers.LxmertConfig`.

        Only the cross-modality encoder's depth (`x_layers`) is kept; the language and
        object-relationship encoders do not exist in LXMERT-S.
        """
        sizes = {
            name: getattr(lxmert_config, name)
            for name in (
                "vocab_size",
                "hidden_size",
                "num_attention_heads",
                "intermediate_size",
                "hidden_act",
                "hidden_dropout_prob",
                "attention_probs_dropout_prob",
                "max_position_embeddings",
                "type_vocab_size",
                "initializer_range",
                "visual_feat_dim",
                "visual_pos_dim",
                "num_object_labels",
                "num_attr_labels",
                "visual_loss_normalizer",
                "num_qa_labels",
            )
        }
        settings = {
            "num_layers": lxmert_config.x_layers,
            "visual_cls_token": False,
            "pooler_type": "language",
            "position_ids_type": "absolute",
            "gate_region_heads": False,
            "pad_token_id": lxmert_config.pad_token_id,
        }
        return cls(**{**sizes, **settings, **kwargs})


__all__ = ["LxmertSConfig"]
