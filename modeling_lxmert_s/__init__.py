"""LXMERT-S for multi-stage pre-training; importing the package registers it with the Auto classes."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForVisualQuestionAnswering,
    AutoProcessor,
)

from .configuration_lxmert_s import LxmertSConfig
from .convert_lxmert import convert_lxmert_state_dict
from .modeling_lxmert_s import (
    PRETRAINING_TASKS,
    EncoderFeatures,
    LxmertSContrastiveFeatures,
    LxmertSForImageTextRetrieval,
    LxmertSForPreTraining,
    LxmertSForPreTrainingOutput,
    LxmertSForQuestionAnswering,
    LxmertSForVisualReasoning,
    LxmertSModel,
    LxmertSModelOutput,
    LxmertSPreTrainedModel,
    LxmertSTaskOutput,
    LxmertSUnidirectionalOutput,
    PretrainingHead,
    PretrainingTask,
    check_pretraining_tasks,
    tasks_need,
)
from .pretraining_pieces import PieceSettings, PretrainingBatch
from .processing_lxmert_s import LxmertSProcessor

AutoConfig.register(LxmertSConfig.model_type, LxmertSConfig)
AutoModel.register(LxmertSConfig, LxmertSModel)
AutoModelForPreTraining.register(LxmertSConfig, LxmertSForPreTraining)
# Where transformers registers LXMERT, and where it registers ViLT's VQA model. (The VQA pipeline feeds
# pixels, which LXMERT-S does not take: it reads detector region features.)
AutoModelForQuestionAnswering.register(LxmertSConfig, LxmertSForQuestionAnswering)
AutoModelForVisualQuestionAnswering.register(LxmertSConfig, LxmertSForQuestionAnswering)
# With this package imported, AutoProcessor finds the processor here, not asking to run the folder's copy.
AutoProcessor.register(LxmertSConfig, LxmertSProcessor)
# save_pretrained then writes an auto_map entry for each class and copies the code beside the weights.
LxmertSConfig.register_for_auto_class()
LxmertSModel.register_for_auto_class("AutoModel")
LxmertSForPreTraining.register_for_auto_class("AutoModelForPreTraining")
# One Auto class per class here; config.AUTO_MAP adds AutoModelForVisualQuestionAnswering.
LxmertSForQuestionAnswering.register_for_auto_class("AutoModelForQuestionAnswering")
# transformers has no Auto class for NLVR2 or retrieval (nor for its own ViLT/BLIP models of these
# tasks). Registering them as AutoModel is what makes save_pretrained copy the code, and the saved
# folder then rebuilds the task model with AutoModel(..., trust_remote_code=True), as Hub remote
# code without a matching Auto class does; the encoder alone stays LxmertSModel.from_pretrained.
LxmertSForVisualReasoning.register_for_auto_class("AutoModel")
LxmertSForImageTextRetrieval.register_for_auto_class("AutoModel")

__all__ = [
    "PRETRAINING_TASKS",
    "EncoderFeatures",
    "LxmertSConfig",
    "LxmertSContrastiveFeatures",
    "LxmertSForImageTextRetrieval",
    "LxmertSForPreTraining",
    "LxmertSForPreTrainingOutput",
    "LxmertSForQuestionAnswering",
    "LxmertSForVisualReasoning",
    "LxmertSModel",
    "LxmertSModelOutput",
    "LxmertSPreTrainedModel",
    "LxmertSProcessor",
    "LxmertSTaskOutput",
    "LxmertSUnidirectionalOutput",
    "PieceSettings",
    "PretrainingBatch",
    "PretrainingHead",
    "PretrainingTask",
    "check_pretraining_tasks",
    "convert_lxmert_state_dict",
    "tasks_need",
]
