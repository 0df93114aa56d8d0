"""LXMERT-S for multi-stage pre-training; importing the package registers it with the Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from .configuration_lxmert_s import PRETRAINING_TASKS, LxmertSConfig
from .convert_lxmert import convert_lxmert_state_dict
from .modeling_lxmert_s import (
    LxmertSForPreTraining,
    LxmertSForPreTrainingOutput,
    LxmertSModel,
    LxmertSModelOutput,
    LxmertSPreTrainedModel,
)
from .pretraining_heads import HEADS

AutoConfig.register(LxmertSConfig.model_type, LxmertSConfig)
AutoModel.register(LxmertSConfig, LxmertSModel)
AutoModelForPreTraining.register(LxmertSConfig, LxmertSForPreTraining)
# save_pretrained then writes an auto_map entry for each class and copies the code beside the weights.
LxmertSConfig.register_for_auto_class()
LxmertSModel.register_for_auto_class("AutoModel")
LxmertSForPreTraining.register_for_auto_class("AutoModelForPreTraining")

__all__ = [
    "HEADS",
    "PRETRAINING_TASKS",
    "LxmertSConfig",
    "LxmertSForPreTraining",
    "LxmertSForPreTrainingOutput",
    "LxmertSModel",
    "LxmertSModelOutput",
    "LxmertSPreTrainedModel",
    "convert_lxmert_state_dict",
]
