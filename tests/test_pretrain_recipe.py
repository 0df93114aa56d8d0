"""`recipes/pretrain.py` as users run it: killed and resumed, data-parallel under `accelerate launch`, and
the held-out scores it prints and records in the model card."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard, ModelCardData
from safetensors.torch import load_file
from tiny_curriculum import ALIGNMENT_STAGE, ONE_EPOCH_TOKEN, tiny_stages, write_tiny_curriculum

from lxmert_s_msp.data.synthetic import WorldSettings, generate_world

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "pretrain.py"
STAGES = ["1-token", "2-phrase", "3-sentence"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return generate_world(tmp_path_factory.mktemp("data") / "world", WorldSettings(images=40, feature_dim=32))


def _environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _pretrain(
    config: Path, out: Path, *launcher: str, flags: tuple[str, ...] = (), **popen
) -> subprocess.Popen:
    command = [*launcher, str(RECIPE)] if launcher else [sys.executable, str(RECIPE)]
    return subprocess.Popen(
        [*command, "--config", str(config), "--output-dir", str(out), *flags],
        env=_environment(),
        cwd=REPO,
        **popen,
    )


def _finish(process: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output or ""


def _stage_state(out: Path, stage: str) -> dict:
    return json.loads((out / stage / "final" / "trainer_state.json").read_text())


def _weights(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every stage's final weights and the Hub model's."""
    files = [
        *(out / stage / "final" / "model.safetensors" for stage in STAGES),
        out / "hub" / "model.safetensors",
    ]
    return {str(path.relative_to(out)): load_file(path) for path in files}


# Moments every run of the tiny curriculum passes, in order, each observed by name: the paths (globs in the
# output folder) that show it is under way or done. `_kill_at` kills at the first look that finds the moment,
# or a later one, reached: never by counting files, which a loaded machine sees fewer of.
KILL_MOMENTS = {
    "world generation begun": ("world.partial", "world/world.json"),
    **{
        moment.format(stage=stage): (glob.format(stage=stage),)
        for stage in STAGES
        for moment, glob in (
            ("{stage}: a checkpoint written", "{stage}/checkpoint-*/checkpoint_complete"),
            ("{stage}: its final folder begun", "{stage}/final*"),
        )
    },
    "the Hub folder begun": ("hub.partial", "hub/README.md"),
    "the scores begun": ("hub.partial/processor_config.json", "zero_shot_scores.json"),
}
MOMENTS = list(KILL_MOMENTS)


def _reached(out: Path, moment: str) -> bool:
    """Whether the run writing `out` has reached `moment` (or one after it)."""
    later = MOMENTS[MOMENTS.index(moment) :]
    try:
        return any(next(out.glob(glob), None) for name in later for glob in KILL_MOMENTS[name])
    except FileNotFoundError:  # a folder renamed or removed while listed: look again
        return False


def _kill_at(process: subprocess.Popen, out: Path, moment: str, delay: float) -> None:
    """SIGKILL `process` `delay` seconds after it is seen to reach `moment`."""
    while process.poll() is None and not _reached(out, moment):
        time.sleep(0.005)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, str]:
    """The tiny curriculum on its own fresh synthetic world, checkpointing every 2 steps, run to the end: its
    output folder and what it printed."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    config = write_tiny_curriculum(folder, save_steps=2)
    output = _finish(
        _pretrain(config, folder / "out", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    )
    return folder / "out", output


@pytest.mark.slow
@pytest.mark.parametrize("part", range(3))
def test_a_run_killed_anywhere_ends_identical_to_an_uninterrupted_one(tmp_path, uninterrupted, part):
    """SIGKILL at a named moment of the run's first, middle or last third (world generation, a checkpoint or
    a final model of any stage, the Hub folder, the scores), drawn with a printed seed (`KILL_SEED`, default
    0, to replay or vary it), then the same command again: the same weights bit for bit, the same log and
    the same printed scores as a run never killed, which also built its own world afresh."""
    reference, printed = uninterrupted
    # each moment's last path is one a finished run keeps: a renamed file cannot make a moment count as
    # passed before the run gets there, or never
    assert [name for name, globs in KILL_MOMENTS.items() if not next(reference.glob(globs[-1]), None)] == []
    seed = int(os.environ.get("KILL_SEED", "0"))
    draw = random.Random(f"{seed}-{part}")
    third = len(MOMENTS) // 3
    moment, delay = draw.choice(MOMENTS[part * third : (part + 1) * third]), draw.uniform(0, 0.2)
    trial = f"killed {delay:.2f} s after {moment!r} (KILL_SEED={seed}, part {part})"
    print(trial)
    config = write_tiny_curriculum(tmp_path, save_steps=2)
    out = tmp_path / "out"
    process = _pretrain(config, out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_at(process, out, moment, delay)
    assert process.returncode == -signal.SIGKILL, f"the run ended before it was {trial}"

    output = _finish(_pretrain(config, out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    assert output.splitlines()[-3:] == printed.splitlines()[-3:], trial  # the held-out scores
    expected, resumed = _weights(reference), _weights(out)
    for name, tensors in expected.items():
        assert resumed[name].keys() == tensors.keys(), (trial, name)
        assert all(torch.equal(tensors[key], resumed[name][key]) for key in tensors), (trial, name)
    for stage in STAGES:
        state, reference_state = _stage_state(out, stage), _stage_state(reference, stage)
        # one logged entry per optimizer step, before and after the kill: none lost, none repeated
        steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
        assert steps == list(range(1, reference_state["global_step"] + 1)), (trial, stage)
        losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
        reference_losses = [entry["loss"] for entry in reference_state["log_history"] if "loss" in entry]
        assert losses == reference_losses, (trial, stage)


@pytest.mark.slow
def test_a_second_run_into_the_same_output_folder_is_refused_naming_the_first(tmp_path, world):
    """Two terminals, or a job submitted twice: the second run is refused while the first holds the folder,
    which the first then finishes undisturbed."""
    config = write_tiny_curriculum(tmp_path, [ONE_EPOCH_TOKEN], data={"dir": str(world)})
    out, log = tmp_path / "out", tmp_path / "first.txt"
    with log.open("w") as first_output:
        first = _pretrain(config, out, stdout=first_output, stderr=subprocess.STDOUT)
        lock = out / ".lock"
        while not (lock.is_file() and lock.read_text().startswith(f"{first.pid} ")):
            assert first.poll() is None, f"the first run ended without taking the lock: {log.read_text()}"
            time.sleep(0.01)
        first.send_signal(signal.SIGSTOP)  # it holds the folder for as long as the second takes to start
        try:
            second = _pretrain(config, out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            output, _ = second.communicate(timeout=300)
        finally:
            first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=300) == 0, log.read_text()
    assert second.returncode != 0
    holder = f"pid {first.pid} on {socket.gethostname()}"
    assert f"the output folder {out} is in use by another process ({holder}, since " in output
    assert (out / "hub" / "model.safetensors").is_file()


def _two_processes(*device_flags: str) -> list[str]:
    """docs/pretraining.md's data-parallel launch, `accelerate launch --num_processes 2`, on a free port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launch = [sys.executable, "-m", "accelerate.commands.launch", *device_flags, "--num_processes", "2"]
    return [*launch, "--main_process_port", str(port)]


@pytest.mark.slow
@pytest.mark.parametrize("device_flags", [["--cpu"], []], ids=["cpu-flag", "no-flag"])
def test_accelerate_launch_with_two_processes_runs_data_parallel(tmp_path, world, device_flags):
    config = write_tiny_curriculum(tmp_path, tiny_stages(epochs=(1, 1, 1)), data={"dir": str(world)})
    output = _finish(
        _pretrain(
            config,
            tmp_path / "out",
            *_two_processes(*device_flags),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    )
    assert "starting 2 gloo processes" in output
    # 32 images; their phrases packed into 62 texts of 20 tokens; 160 captions
    for stage, examples in zip(STAGES, (32, 62, 160), strict=True):
        state = _stage_state(tmp_path / "out", stage)
        assert state["train_batch_size"] == 4, stage  # global batch 8 over 2 processes
        assert state["global_step"] == -(-examples // 8), stage  # steps of the global batch, not of 4
    assert output.count("Hub-ready folder") == 1  # reported once, by the main process


@pytest.mark.slow
def test_the_default_curriculum_trains_data_parallel_on_two_processes(tmp_path):
    """recipes/configs/synthetic.yaml (its model, tasks, batch sizes, text lengths) under the 2-process
    command of docs/pretraining.md: its token stage trains no loss that reads the pooler, which DDP must be
    told about; the tiny curriculum above, whose heads all train, did not show it."""
    config = yaml.safe_load((REPO / "recipes" / "configs" / "synthetic.yaml").read_text())
    # Only the amount of data and of training is cut: a 200-image world, one epoch a stage.
    config["data"]["synthetic"]["images"] = 200
    for stage in config["stages"]:
        stage["epochs"] = 1
    path = tmp_path / "default_small.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    run = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    output = _finish(_pretrain(path, out, *_two_processes(), **run), timeout=600)
    assert "starting 2 gloo processes" in output
    assert "Stage 1/3 'token': no task of the stage reaches" in output and "lxmert.pooler" in output
    for index, stage in enumerate(config["stages"], start=1):
        state = _stage_state(out, f"{index}-{stage['name']}")
        assert state["train_batch_size"] == stage["batch_size"] // 2, stage["name"]
    assert (out / "hub" / "model.safetensors").is_file()


def _row(card: str, start: str) -> list[str]:
    """The cells of the card's table row that starts with `start`."""
    line = next(line for line in card.splitlines() if line.startswith(f"| {start}"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_job_prints_and_records_held_out_scores_of_both_paths(tmp_path, world):
    config = write_tiny_curriculum(
        tmp_path, [ALIGNMENT_STAGE], data={"dir": str(world)}, model={"pooler_type": "alignment"}
    )
    out = tmp_path / "out"
    run = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    default = _finish(_pretrain(config, tmp_path / "default", **run))
    assert "ITM on every pair" not in default  # all pairs only when asked: the slow, paper's protocol
    assert (
        "  top-16 by contrastive similarity re-ranked by ITM log-odds + VSC logit (cross-modal encoder): IR "
        in default
    )
    output = _finish(_pretrain(config, out, flags=("--all-pairs",), **run))
    assert "ITM on every pair: 100%" in output  # scoring shows its progress
    lines = output.splitlines()
    start = lines.index(f"Loss curves:      {out / 'loss_curves.png'}") + 1
    itm, title, contrastive, reranked, all_pairs, kept = lines[start : start + 6]
    assert itm.startswith("Held-out ITM accuracy (test: 20 captions, each with its image and with another; ")
    assert itm.endswith("% (chance 50%)")
    assert title == (
        "Zero-shot retrieval (test: 4 images x 20 captions; TR over every caption (standard)), R@1/5/10 in %:"
    )
    # 4 images: any image is in the top 5; 20 captions, 5 per image: 1 - comb(15, K) / comb(20, K)
    chance = "(chance 25.0 / 100.0 / 100.0)   TR {} (chance 25.0 / 80.6 / 98.4)"
    assert contrastive.startswith("  contrastive similarity (VSC embeddings, no cross-modal pass): IR ")
    assert reranked.startswith(
        "  top-16 by contrastive similarity re-ranked by ITM log-odds + VSC logit (cross-modal encoder): IR "
    )
    assert all_pairs.startswith("  ITM on every pair (cross-modal encoder): IR ")
    assert kept.startswith("  share of the all-pairs recall the re-ranking keeps: IR ")
    for line in (contrastive, reranked, all_pairs):
        text_recalls = line.split("TR ")[1].split(" (chance")[0]
        assert line.endswith(chance.format(text_recalls))

    card = (out / "hub" / "README.md").read_text()
    assert "## Zero-shot evaluation" in card
    accuracy = itm.split(": ")[-1].split("%")[0]
    assert _row(card, "ITM accuracy")[1:] == ["cross-modal encoder (ITM)", accuracy, "50"]
    for printed, score, source in (
        (contrastive, "by contrastive similarity", "contrastive path (VSC embeddings, no cross-modal pass)"),
        (
            reranked,
            "top 16 by contrastive similarity, re-ranked by ITM log-odds + VSC logit",
            "contrastive path, then the cross-modal encoder (ITM) added to it on the top 16",
        ),
        (all_pairs, "by ITM on every pair", "cross-modal encoder (ITM)"),
    ):
        image_recalls = printed.split(": IR ")[1].split(" (chance")[0]
        text_recalls = printed.split("TR ")[1].split(" (chance")[0]
        assert _row(card, f"IR R@1 / 5 / 10, {score}")[1:] == [source, image_recalls, "25.0 / 100.0 / 100.0"]
        assert _row(card, f"TR R@1 / 5 / 10, {score}")[1:] == [source, text_recalls, "25.0 / 80.6 / 98.4"]
    # the same scores in the metadata header's model-index, which huggingface_hub parses back
    metadata = ModelCard.load(out / "hub" / "README.md").data
    assert metadata.license == "apache-2.0" and "msp" in metadata.tags and metadata.datasets is None
    assert ModelCardData(**metadata.to_dict()).eval_results == metadata.eval_results
    scores = json.loads((out / "zero_shot_scores.json").read_text())
    expected = {"ITM accuracy": round(100 * scores["itm"]["accuracy"], 2)} | {
        f"{ranking}_{name}": round(100 * value, 2)
        for ranking, recalls in scores["retrieval"]["rankings"].items()
        for name, value in recalls.items()
    }
    assert {result.metric_name: result.metric_value for result in metadata.eval_results} == expected
    assert {result.dataset_split for result in metadata.eval_results} == {"test"}
    assert str(world) not in card and str(tmp_path) not in card  # no local paths in a card for the Hub

    # a re-run of the finished job reuses the scores of the same weights and writes the same card
    cached = out / "zero_shot_scores.json"
    stamp = cached.stat().st_mtime_ns
    again = _finish(_pretrain(config, out, flags=("--all-pairs",), **run))
    assert "ITM on every pair: " not in again and cached.stat().st_mtime_ns == stamp
    assert again.splitlines()[-6:] == lines[start : start + 6]
    assert (out / "hub" / "README.md").read_text() == card
