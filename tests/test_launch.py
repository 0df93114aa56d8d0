"""Reading the `accelerate launch` command line that started a process, and the threads of one CPU process
(lxmert_s_msp/training/launch.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lxmert_s_msp.training import launch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command",
    [
        [
            "/usr/bin/python3",
            "/usr/local/bin/accelerate",
            "launch",
            "--cpu",
            "--num_processes",
            "2",
            "x.py",
            "--a",
        ],
        ["python", "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "x.py", "--a"],
    ],
)
def test_the_launch_arguments_are_found_in_either_form(command):
    assert launch._launch_arguments(command) == ["--cpu", "--num_processes", "2", "x.py", "--a"]


def test_a_parent_that_is_not_accelerate_launch_is_not_read():
    assert launch._launch_arguments(["python", "train.py", "launch"]) is None


def test_a_process_group_set_up_by_a_launcher_is_left_alone(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launch._processes_requested_from_simple_launcher() == 1


def test_the_requested_count_comes_from_the_parent_command(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "False")
    monkeypatch.setenv("MASTER_PORT", "29500")
    for name in launch.PROCESS_GROUP_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    class Parent:
        def cmdline(self):
            return ["accelerate", "launch", "--num_processes", "3", "recipes/pretrain.py"]

    monkeypatch.setattr(launch.psutil, "Process", lambda pid: Parent())
    assert launch._processes_requested_from_simple_launcher() == 3


class LaunchedBy:
    """The `accelerate launch` parent process, as psutil sees it."""

    def __init__(self, arguments: list[str], environment: dict[str, str]):
        self.arguments, self.environment = arguments, environment

    def cmdline(self) -> list[str]:
        return ["accelerate", "launch", *self.arguments, "recipes/pretrain.py"]

    def environ(self) -> dict[str, str]:
        return self.environment


class OneCpuProcess:
    num_processes = 1
    device = torch.device("cpu")

    def __init__(self):
        self.printed = []

    def print(self, message: str) -> None:
        self.printed.append(message)


@pytest.fixture
def threads():
    """torch's thread count, restored after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("arguments", "environment", "threads_after"),
    [
        ([], {}, 3),  # accelerate's default 1: the machine's cores
        ([], {"OMP_NUM_THREADS": "1"}, None),  # the caller's 1
        (["--num_cpu_threads_per_process", "1"], {}, None),  # the launch's 1
    ],
    ids=["accelerate-chose-1", "caller-chose-1", "launch-flag-chose-1"],
)
def test_one_cpu_process_gets_the_cores_unless_its_one_thread_was_chosen(
    monkeypatch, threads, arguments, environment, threads_after
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "False")
    monkeypatch.setattr(launch.psutil, "Process", lambda pid: LaunchedBy(arguments, environment))
    monkeypatch.setattr(launch, "machine_cores", lambda: 3)
    state = OneCpuProcess()
    assert launch.use_every_core(state) == threads_after
    if threads_after is None:
        assert not state.printed and os.environ["OMP_NUM_THREADS"] == "1"
    else:
        assert torch.get_num_threads() == 3 and os.environ["OMP_NUM_THREADS"] == "3"
        assert "running on its 3 cores" in state.printed[0]


def test_processes_not_started_by_accelerate_launch_or_not_alone_on_a_cpu_are_left_alone(
    monkeypatch, threads
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)  # plain `python script.py`
    monkeypatch.setattr(launch.psutil, "Process", lambda pid: LaunchedBy([], {}))
    monkeypatch.setattr(launch, "machine_cores", lambda: 3)
    assert launch.use_every_core(OneCpuProcess()) is None
    monkeypatch.setenv("ACCELERATE_USE_CPU", "False")
    two = OneCpuProcess()
    two.num_processes = 2
    assert launch.use_every_core(two) is None
    assert torch.get_num_threads() != 3


def test_a_plain_accelerate_launch_runs_on_the_machines_cores(tmp_path):
    """The README's launch, `accelerate launch script.py`, from an environment without OMP_NUM_THREADS."""
    script = tmp_path / "threads.py"
    script.write_text(
        "import torch\nfrom lxmert_s_msp.training.launch import distributed_state\n"
        "distributed_state()\nprint('THREADS', torch.get_num_threads())\n"
    )
    environment = {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"}
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO), environment.get("PYTHONPATH", "")])
    launched = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", str(script)],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"THREADS {launch.machine_cores()}" in launched.stdout
