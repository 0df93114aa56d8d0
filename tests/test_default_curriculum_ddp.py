"""The default curriculum (recipes/configs/synthetic.yaml: its model, tasks, batch sizes, text lengths) under
the README's 2-process CPU command. Its token stage trains no loss that reads the pooler, which DDP must be
told about; a tiny stand-in config whose heads all train did not show it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_default_curriculum_trains_data_parallel_on_two_processes(tmp_path):
    config = yaml.safe_load((REPO / "recipes" / "configs" / "synthetic.yaml").read_text())
    # Only the amount of data and of training is cut: a 200-image world, one epoch a stage.
    config["data"]["synthetic"]["images"] = 200
    for stage in config["stages"]:
        stage["epochs"] = 1
    path = tmp_path / "default_small.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "2",
        "--main_process_port",
        str(_free_port()),
        str(REPO / "recipes" / "pretrain.py"),
        "--config",
        str(path),
        "--output-dir",
        str(out),
    ]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    run = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=600)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    assert "starting 2 gloo processes" in output
    assert "Stage 1/3 'token': no task of the stage reaches" in output and "lxmert.pooler" in output
    for index, stage in enumerate(config["stages"], start=1):
        state = json.loads((out / f"{index}-{stage['name']}" / "final" / "trainer_state.json").read_text())
        assert state["train_batch_size"] == stage["batch_size"] // 2, stage["name"]
    assert (out / "hub" / "model.safetensors").is_file()
