"""Data-parallel launch on machines without GPUs, through `accelerate launch`, as on machines with them.

accelerate 1.x picks how to start processes from the device flags (`--multi_gpu`, or the distributed type
of its config file), not from `--num_processes`. On a machine without GPUs, `accelerate launch
--num_processes 2 script.py` and `accelerate launch --cpu --num_processes 2 script.py` therefore reach its
"simple" launcher, which starts several processes only through `mpirun` (with `--mpirun_hostfile`) and
otherwise starts ONE process, silently, with `MASTER_PORT` set and no `WORLD_SIZE`. Separately,
`PartialState()` joins a process group on CPUs only when told `cpu=True` (else each of several processes
trains alone, on all the data).

`distributed_state` fixes both for our recipes: a process started by that simple launcher while the launch
asked for N > 1 processes re-enters `accelerate launch` through its multi-process path (`--multi_gpu`, which
starts N processes with torch's elastic launcher) with `ACCELERATE_USE_CPU=true`, and the state is created
with `cpu=True` whenever there is no GPU, so the N processes form one gloo group (MULTI_CPU).

The same simple launcher also sets `OMP_NUM_THREADS=1` for its one process unless told a number, so a
plain `accelerate launch script.py` trained on one thread of a multi-core CPU (issue 29 timed the default
pre-training run at 485 s on one thread of 2 idle cores, 296 s on two). `use_every_core` gives one CPU
process the machine's cores back when that 1 came from accelerate, not from the caller's environment or
`--num_cpu_threads_per_process`.
"""

from __future__ import annotations

import os
import sys

import psutil
import torch
from accelerate import PartialState
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import launch_command_parser
from accelerate.utils import parse_flag_from_env

# Set by torch's elastic launcher and by MPI: their presence means the process group is already arranged.
PROCESS_GROUP_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def distributed_state() -> PartialState:
    """The run's `PartialState`, after re-launching a silently single-process CPU launch (see module doc)."""
    requested = _processes_requested_from_simple_launcher()
    if requested > 1:
        if torch.cuda.is_available():
            raise RuntimeError(
                f"accelerate launch was asked for {requested} processes but started one: add --multi_gpu "
                "(or an accelerate config with distributed_type: MULTI_GPU)"
            )
        _relaunch_on_cpus(requested)
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    use_every_core(state)
    return state


def machine_cores() -> int:
    """The physical cores this process may run on."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(psutil.cpu_count(logical=False) or available, available))


def use_every_core(state: PartialState) -> int | None:
    """Run torch on `machine_cores()` threads when `state` is one process on a CPU whose one thread accelerate
    chose (module doc); returns the thread count set, None when nothing changed. The last digits of a run's
    scores depend on the thread count (the same command on the same machine gives the same result)."""
    if state.num_processes != 1 or state.device.type != "cpu" or not _one_thread_set_by_accelerate():
        return None
    cores = machine_cores()
    if cores == 1:
        return None
    torch.set_num_threads(cores)
    os.environ["OMP_NUM_THREADS"] = str(cores)  # for the processes this one starts (DataLoader workers)
    state.print(
        f"One process on the CPU: running on its {cores} cores (accelerate launch had set "
        "OMP_NUM_THREADS=1; set OMP_NUM_THREADS or --num_cpu_threads_per_process to choose)"
    )
    return cores


def _one_thread_set_by_accelerate() -> bool:
    """Whether this process's OMP_NUM_THREADS=1 is accelerate's default: the `accelerate launch` that started
    it was given no thread count, in its arguments or its environment."""
    if os.environ.get("OMP_NUM_THREADS") != "1" or "ACCELERATE_USE_CPU" not in os.environ:
        return False
    try:
        parent = psutil.Process(os.getppid())
        arguments = _launch_arguments(parent.cmdline())
        chosen = "OMP_NUM_THREADS" in parent.environ()
    except psutil.Error:
        return False
    if arguments is None or chosen:
        return False
    return launch_command_parser().parse_args(arguments).num_cpu_threads_per_process is None


def _processes_requested_from_simple_launcher() -> int:
    """How many processes the `accelerate launch` that started this one asked for, when it is the simple
    launcher (which sets `ACCELERATE_USE_CPU` and, for several processes, `MASTER_PORT`); else 1."""
    environment = os.environ
    if "ACCELERATE_USE_CPU" not in environment or "MASTER_PORT" not in environment:
        return 1
    if any(name in environment for name in PROCESS_GROUP_VARIABLES):
        return 1
    command = psutil.Process(os.getppid()).cmdline()
    arguments = _launch_arguments(command)
    if arguments is None:
        return 1
    parsed = launch_command_parser().parse_args(arguments)
    if parsed.num_processes is not None:
        return parsed.num_processes
    if parsed.config_file is not None:
        return load_config_from_file(parsed.config_file).num_processes
    return 1


def _launch_arguments(command: list[str]) -> list[str] | None:
    """The arguments after `accelerate launch` (or `-m accelerate.commands.launch`) in a command line."""
    for position, word in enumerate(command):
        if word == "accelerate.commands.launch" or (
            word == "launch"
            and position > 0
            and os.path.basename(command[position - 1]).startswith("accelerate")
        ):
            return command[position + 1 :]
    return None


def _relaunch_on_cpus(processes: int) -> None:
    """Replace this process with `accelerate launch --multi_gpu` of the same script on CPUs."""
    port = os.environ["MASTER_PORT"]
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--main_process_port",
        port,
        "--mixed_precision",
        os.environ.get("ACCELERATE_MIXED_PRECISION", "no"),
        *sys.argv,
    ]
    print(
        f"accelerate launch started 1 of the {processes} processes asked for (its CPU path needs mpirun); "
        f"starting {processes} gloo processes through `accelerate launch --multi_gpu` on the CPUs",
        file=sys.stderr,
        flush=True,
    )
    os.execve(sys.executable, launch, {**os.environ, "ACCELERATE_USE_CPU": "true"})
