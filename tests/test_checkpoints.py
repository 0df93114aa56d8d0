"""A model folder whose weights file was cut short or corrupted gets an error naming the file and what to
do."""

from __future__ import annotations

import pytest
import torch
from model_inputs import tiny_config

from lxmert_s_msp.checkpoints import RECOPY, CorruptCheckpointError, check_weights, load_model
from lxmert_s_msp.evaluation.downstream import evaluate_checkpoint
from lxmert_s_msp.training.downstream_tasks import TASKS
from modeling_lxmert_s import LxmertSForPreTraining

SPOILED = {
    "cut short": lambda data: data[: len(data) // 2],
    "last byte missing": lambda data: data[:-1],
    "garbled header": lambda data: b"\xff" * 8 + data[8:],
    "empty": lambda data: b"",
}


@pytest.fixture
def saved(tmp_path):
    model = LxmertSForPreTraining(tiny_config(num_qa_labels=4))
    model.save_pretrained(tmp_path)
    return model, tmp_path


def test_a_complete_folder_loads(saved):
    model, folder = saved
    check_weights(folder)
    loaded = load_model(LxmertSForPreTraining, folder)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


@pytest.mark.parametrize("spoil", SPOILED.values(), ids=SPOILED)
def test_a_spoiled_weights_file_is_named_with_what_to_do(saved, spoil):
    _, folder = saved
    weights = folder / "model.safetensors"
    weights.write_bytes(spoil(weights.read_bytes()))
    expected = rf"^{weights}: not a complete safetensors file \(.+\); it was cut short or corrupted"
    with pytest.raises(CorruptCheckpointError, match=expected) as raised:
        load_model(LxmertSForPreTraining, folder)
    assert str(raised.value).endswith(RECOPY)
    with pytest.raises(CorruptCheckpointError, match="resume from another"):
        check_weights(folder, "resume from another")
    # where a recipe loads a checkpoint: the model is loaded before the data is read
    with pytest.raises(CorruptCheckpointError, match=expected):
        evaluate_checkpoint(TASKS["vqa"], folder, None, "test")
