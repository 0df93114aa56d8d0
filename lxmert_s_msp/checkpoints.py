"""Loading the model folders and checkpoints the recipes read: a weights file cut short or corrupted (an
interrupted copy or download, a full disk) gets an error naming the file and what to do, instead of
safetensors' bare "header too large" from deep inside `from_pretrained` or the `Trainer`'s resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from safetensors import SafetensorError, safe_open
from transformers import PreTrainedModel

Model = TypeVar("Model", bound=PreTrainedModel)

RECOPY = "copy or download the folder again, or run again the command that wrote it"
# a Trainer checkpoint a run resumes from
RESUME_REMEDY = "delete this checkpoint folder, and the run resumes from an earlier one or starts again"


class CorruptCheckpointError(OSError):
    """A weights file of a checkpoint folder is not a complete safetensors file."""


def check_weights(folder: str | Path, remedy: str = RECOPY) -> None:
    """Open the header of every safetensors file in `folder` (no tensor is read, so it costs nothing); a file
    that is not complete raises `CorruptCheckpointError` naming it and `remedy`."""
    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(path, framework="pt"):
                pass
        except SafetensorError as error:
            raise CorruptCheckpointError(
                f"{path}: not a complete safetensors file ({error}); it was cut short or corrupted, "
                f"as by an interrupted copy or download or a full disk: {remedy}"
            ) from error


def load_model(model_class: type[Model], folder: str | Path, **kwargs: Any) -> Model | tuple[Model, dict]:
    """`model_class.from_pretrained(folder, **kwargs)` (with `output_loading_info=True`, its pair), the
    weights checked first when `folder` is a local folder (a Hub name is left to `from_pretrained`)."""
    if Path(folder).is_dir():
        check_weights(folder)
    return model_class.from_pretrained(folder, **kwargs)


__all__ = ["RECOPY", "RESUME_REMEDY", "CorruptCheckpointError", "check_weights", "load_model"]
