"""Tiny LXMERT-S configs, inputs and labels: every model test on them runs in well under a second."""

from __future__ import annotations

import torch
from transformers import LxmertConfig

from modeling_lxmert_s import PRETRAINING_TASKS, LxmertSConfig

TINY_SIZES = {
    "hidden_size": 16,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "num_layers": 2,
    "vocab_size": 40,
    "max_position_embeddings": 24,
    "visual_feat_dim": 12,
    "num_object_labels": 7,
    "num_attr_labels": 5,
}


# Every task but ITM_HS and ITM_VSC, which train the ITM head itself (a config lists one ITM variant), WPG,
# which needs matched rows and so goes with ITM_VSC (ALIGNMENT_TASKS), and RPT, which trains the alignment
# pooler's relation readout (RELATION_SETTINGS).
EVERY_HEAD = [task for task in PRETRAINING_TASKS if task not in ("itm_hs", "itm_vsc", "wpg", "rpt")]
ALIGNMENT_TASKS = ["mlm", "vsc", "wpg", "itm_vsc"]
RELATION_SETTINGS = {"pooler_type": "alignment", "alignment_relations": True}


def task_settings(task: str) -> dict:
    """The config settings of a model that trains `task` alone: ITM_VSC mines its negatives with the VSC
    head, so it comes with it; RPT trains the relation readout."""
    tasks = [task, "vsc"] if task == "itm_vsc" else [task]
    return {"pretraining_tasks": tasks, **(RELATION_SETTINGS if task == "rpt" else {})}


def tiny_config(**overrides) -> LxmertSConfig:
    settings = {**TINY_SIZES, "pretraining_tasks": EVERY_HEAD, **overrides}
    return LxmertSConfig(**settings)


def tiny_lxmert_compatible_config(**overrides) -> LxmertSConfig:
    """The LXMERT-compatible setting (`LxmertSConfig.from_lxmert_config`) at the tiny sizes, LXMERT's four
    pre-training tasks."""
    sizes = {name: value for name, value in TINY_SIZES.items() if name != "num_layers"}
    lxmert = LxmertConfig(l_layers=0, r_layers=0, x_layers=TINY_SIZES["num_layers"], **sizes)
    return LxmertSConfig.from_lxmert_config(
        lxmert, **{"pretraining_tasks": ["mlm", "mrfr", "moc", "itm"], **overrides}
    )


def random_inputs(
    config: LxmertSConfig, batch: int = 3, length: int = 8, regions: int = 5, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Inputs with padded text (rows 0 and 2) and padded regions (row 1), word-level-style positions."""
    generator = torch.Generator().manual_seed(seed)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[0, length - 3 :] = 0
    attention_mask[-1, length - 1 :] = 0
    input_ids = torch.randint(5, config.vocab_size, (batch, length), generator=generator) * attention_mask
    position_ids = torch.arange(length).expand(batch, length) * attention_mask
    visual_attention_mask = torch.ones(batch, regions, dtype=torch.long)
    visual_attention_mask[1 % batch, regions - 2 :] = 0
    boxes = torch.rand(batch, regions, 2, 2, generator=generator).sort(dim=2).values
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "visual_feats": torch.randn(batch, regions, config.visual_feat_dim, generator=generator),
        "visual_pos": boxes.transpose(2, 3).flatten(2),
        "visual_attention_mask": visual_attention_mask,
    }


def random_labels(
    config: LxmertSConfig, inputs: dict[str, torch.Tensor], seed: int = 1
) -> dict[str, torch.Tensor]:
    """Labels for every task, with at least one chosen position per task."""
    generator = torch.Generator().manual_seed(seed)
    batch, length = inputs["input_ids"].shape
    regions = inputs["visual_feats"].shape[1]
    mlm_labels = torch.full((batch, length), -100)
    mlm_labels[0, 1] = 7
    mlm_labels[1, 3] = 9
    mlm_labels[2, 2] = 11
    region_mask = torch.zeros(batch, regions, dtype=torch.bool)
    region_mask[0, 0] = region_mask[1, 2] = region_mask[2, 4] = True
    words = inputs["attention_mask"].bool() & (torch.arange(length) > 0)
    ifrs_mask = torch.zeros(batch, regions, dtype=torch.bool)
    ifrs_mask[0, :3] = True
    confidences = torch.rand(batch, regions, generator=generator) * inputs["visual_attention_mask"]
    topic = (torch.rand(batch, config.vocab_size, generator=generator) < 0.1).float()
    labels = {
        "mlm_labels": mlm_labels,
        "region_mask": region_mask,
        "mrfr_labels": torch.randn(batch, regions, config.visual_feat_dim, generator=generator),
        "moc_object_labels": torch.randint(
            0, config.num_object_labels, (batch, regions), generator=generator
        ),
        "moc_object_confidences": confidences,
        "moc_attribute_labels": torch.randint(
            0, config.num_attr_labels, (batch, regions), generator=generator
        ),
        "moc_attribute_confidences": confidences.flip(1),
        "itm_labels": torch.tensor([1, 0, 1])[:batch],
        "ifrs_labels": torch.randn(batch, regions, config.visual_feat_dim, generator=generator),
        "ifrs_mask": ifrs_mask,
        "titp_labels": topic,
        "tits_labels": topic.roll(1, dims=1),
        "flm_labels": torch.where(words, inputs["input_ids"], -100),
        "vsc_labels": torch.arange(batch),
        "image_ids": torch.arange(batch),
        "tag_targets": (torch.rand(batch, length, regions, generator=generator) < 0.3) & words[..., None],
        "wbr_mask": words,
        "wbr_targets": inputs["visual_pos"][:, :1, :4].expand(-1, length, -1).contiguous(),
    }
    if config.alignment_relations:  # RPT's, which only a model with the relation readout takes
        pointed = torch.rand(batch, regions, generator=generator) < 0.4
        labels["relation_targets"] = pointed & inputs["visual_attention_mask"].bool()
        labels["relation_input_ids"] = inputs["input_ids"].masked_fill(torch.arange(length) == 1, 3)
    return labels


def alignment_labels(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Labels of `ALIGNMENT_TASKS` for matched pairs of distinct images; every word is a concept."""
    batch, length = inputs["input_ids"].shape
    labels = random_labels(tiny_config(), inputs)
    return {
        "mlm_labels": labels["mlm_labels"],
        "itm_labels": torch.ones(batch, dtype=torch.long),
        "image_ids": torch.arange(batch),
        "vsc_labels": torch.arange(batch),
        "wpg_concept_mask": inputs["attention_mask"].bool() & (torch.arange(length) > 0),
    }
