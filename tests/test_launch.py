"""Reading the `accelerate launch` command line that started a process (lxmert_s_msp/training/launch.py)."""

from __future__ import annotations

import pytest

from lxmert_s_msp.training import launch


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
