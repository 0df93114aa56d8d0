"""One process at a time writes a folder: a second run into an output folder, or into a synthetic world being
generated, is refused naming the first; the lock a killed run leaves is taken over."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tiny_curriculum import ONE_EPOCH_TOKEN as TOKEN
from tiny_curriculum import TINY_WORLD, write_tiny_curriculum

from lxmert_s_msp.data.folder_lock import FolderInUseError, check_not_locked, folder_lock
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world, world_lock_file
from lxmert_s_msp.training.curriculum import load_curriculum
from lxmert_s_msp.training.pretraining import LOCK_FILE, run_curriculum

REPO = Path(__file__).resolve().parents[1]
HOLD = """
import sys, time
from pathlib import Path
from lxmert_s_msp.data.folder_lock import folder_lock
with folder_lock(Path(sys.argv[1]), "held", "wait"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def hold() -> Iterator[Callable[[Path], subprocess.Popen]]:
    """Start a process that holds a lock file until killed (at the end of the test at the latest)."""
    started: list[subprocess.Popen] = []

    def start(lock_file: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(lock_file)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        started.append(process)
        assert process.stdout.readline() == "held\n"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()
        process.stdout.close()


def _in_use(what: str, process: subprocess.Popen, remedy: str) -> str:
    holder = rf"pid {process.pid} on {socket.gethostname()}, since .+"
    return rf"{what} is in use by another process \({holder}\): {remedy}"


def test_a_second_run_into_an_output_folder_is_refused_and_a_killed_ones_lock_taken_over(tmp_path, hold):
    world = generate_world(tmp_path / "world", WorldSettings(**TINY_WORLD))
    curriculum = load_curriculum(write_tiny_curriculum(tmp_path, [TOKEN], data={"dir": str(world)}))
    out = tmp_path / "out"
    first = hold(out / LOCK_FILE)
    with pytest.raises(
        FolderInUseError,
        match=_in_use(
            f"the output folder {out}", first, "wait for it to end, or choose another --output_dir"
        ),
    ):
        run_curriculum(curriculum, out)
    assert sorted(path.name for path in out.iterdir()) == [LOCK_FILE]  # nothing written

    first.kill()  # SIGKILL: the lock file stays, naming the dead process, and is taken over
    first.wait()
    assert (out / LOCK_FILE).read_text().split()[0] == str(first.pid)
    result = run_curriculum(curriculum, out)
    assert (result.hub_folder / "model.safetensors").is_file()
    assert (out / LOCK_FILE).read_text().split()[0] == str(os.getpid())


def test_a_world_being_generated_is_neither_generated_again_nor_trained_on(tmp_path, hold):
    world = tmp_path / "world"
    generator = hold(world_lock_file(world))
    with pytest.raises(
        FolderInUseError,
        match=_in_use(f"the synthetic world {world}", generator, "wait for its generation to end"),
    ):
        generate_world(world, WorldSettings(**TINY_WORLD))
    assert sorted(path.name for path in tmp_path.iterdir()) == [".world.lock"]
    curriculum = load_curriculum(write_tiny_curriculum(tmp_path, [TOKEN], data={"dir": str(world)}))
    with pytest.raises(
        FolderInUseError,
        match=_in_use(f"the data folder {world}", generator, "wait for its generation to end"),
    ):
        run_curriculum(curriculum, tmp_path / "out")


def test_the_lock_is_held_while_the_block_runs_and_free_after(tmp_path):
    lock_file = tmp_path / "folder" / LOCK_FILE
    check_not_locked(lock_file, "nothing", "-")  # no lock file: nothing to wait for, nothing created
    assert not lock_file.parent.exists()
    with folder_lock(lock_file, "the folder", "wait"):
        assert lock_file.read_text().split()[:2] == [str(os.getpid()), socket.gethostname()]
        with pytest.raises(FolderInUseError, match="the folder is in use by another process"):
            check_not_locked(lock_file, "the folder", "wait")
    check_not_locked(lock_file, "the folder", "wait")
    with folder_lock(lock_file, "the folder", "wait"):
        pass
