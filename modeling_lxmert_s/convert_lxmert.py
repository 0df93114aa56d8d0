"""Map a `transformers` LXMERT state dict onto LXMERT-S (the LXMERT-compatible setting).

The encoder keeps LXMERT's module names, so the cross-modality encoder, the visual feature encoder,
the embeddings and the pooler move by key. The language (`encoder.layer.*`) and object-relationship
(`encoder.r_layers.*`) encoders do not exist in LXMERT-S and are dropped, and so is the QA head
(`answer_head.*`, a downstream head). LXMERT's pre-training heads become MSP task heads; its one
region transform, shared by the object, attribute and feature decoders, is copied into both the
MOC and the MRFR head, which gives the same function at import.
"""

from __future__ import annotations

import torch

_DROPPED_PREFIXES = ("encoder.layer.", "encoder.r_layers.", "answer_head.")

_HEAD_KEYS = {
    "cls.predictions.transform.": ("heads.mlm.transform.",),
    "cls.predictions.decoder.": ("heads.mlm.decoder.",),
    "cls.predictions.bias": ("heads.mlm.bias",),
    "cls.seq_relationship.": ("heads.itm.classifier.",),
    "obj_predict_head.transform.": ("heads.moc.transform.", "heads.mrfr.transform."),
    "obj_predict_head.decoder_dict.obj.": ("heads.moc.object_decoder.",),
    "obj_predict_head.decoder_dict.attr.": ("heads.moc.attribute_decoder.",),
    "obj_predict_head.decoder_dict.feat.": ("heads.mrfr.decoder.",),
}


def convert_lxmert_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of an `LxmertModel` (`embeddings.*`, ...) or `LxmertForPreTraining` (`lxmert.*`, `cls.*`,
    ...) state dict, as in `unc-nlp/lxmert-base-uncased`, to `LxmertSForPreTraining` keys.

    Load the result with `strict=False` into a model built from `LxmertSConfig.from_lxmert_config`:
    heads the model does not carry are simply not loaded.
    """
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        encoder_key = key.removeprefix("lxmert.")
        if encoder_key.split(".")[0] in ("embeddings", "encoder", "pooler"):
            if encoder_key.startswith(_DROPPED_PREFIXES) or encoder_key.endswith("position_ids"):
                continue
            converted[f"lxmert.{encoder_key}"] = tensor
            continue
        if key.startswith(_DROPPED_PREFIXES):
            continue
        prefix = next((prefix for prefix in _HEAD_KEYS if key.startswith(prefix)), None)
        if prefix is None:
            raise ValueError(f"convert_lxmert_state_dict: no LXMERT-S counterpart for key '{key}'")
        for target in _HEAD_KEYS[prefix]:
            converted[target + key[len(prefix) :]] = tensor
    return converted
