"""Batches seeded by what a checkpoint restores: a resumed stage ends bit-identical to an uninterrupted one,
with or without DataLoader workers, and every epoch draws new masks."""

from __future__ import annotations

import pytest
import torch
from tiny_curriculum import tiny_stages, write_tiny_curriculum
from transformers import TrainerCallback

from lxmert_s_msp.data.collators import EPOCH_FIELD, INDEX_FIELD
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.training.curriculum import load_curriculum
from lxmert_s_msp.training.pretraining import stage_model, training_arguments
from lxmert_s_msp.training.sampling import EpochIndices, IndexedRows
from lxmert_s_msp.training.stage_data import PretrainingData, stage_data
from lxmert_s_msp.training.trainer import MSPTrainer

# The phrase stage: 62 packed texts, batch 8 -> 8 steps an epoch, the last of 6 texts; 2 epochs.
STEPS = 16


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("data") / "world", WorldSettings(images=40, feature_dim=32))


class StopAt(TrainerCallback):
    """Ends training after step `step`, as a kill right after that step would (its checkpoint is written)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step == self.step
        return control


def phrase_trainer(world, folder, workers: int = 0, stop_at: int | None = None) -> MSPTrainer:
    """The tiny curriculum's phrase stage, as `run_stage` trains it, checkpointing every 3 steps."""
    folder.mkdir(exist_ok=True)
    config = write_tiny_curriculum(folder, tiny_stages(epochs=(2, 2, 1)), data={"dir": str(world)})
    curriculum = load_curriculum(config, overrides={"save_steps": 3, "dataloader_num_workers": workers})
    training = curriculum.training
    data = PretrainingData.open(world)
    stage = curriculum.stages[1]
    torch.manual_seed(training.seed)
    trained = stage_data(data, stage, training, seed=training.seed)
    arguments = training_arguments(curriculum, stage, folder / "stage")
    arguments.disable_tqdm = True
    return MSPTrainer(
        model=stage_model(curriculum, data, stage, None),
        args=arguments,
        train_dataset=trained.dataset,
        data_collator=trained.collator,
        callbacks=[] if stop_at is None else [StopAt(stop_at)],
    )


def weights(trainer: MSPTrainer) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in trainer.model.state_dict().items()}


@pytest.fixture(scope="module")
def uninterrupted(world, tmp_path_factory):
    trainer = phrase_trainer(world, tmp_path_factory.mktemp("uninterrupted"))
    trainer.train()
    assert trainer.state.global_step == STEPS
    return weights(trainer)


@pytest.mark.parametrize(
    ("workers", "stop_at", "checkpoint"),
    [(0, 5, 3), (0, 13, 12), (2, 10, 9)],
    ids=["epoch-0", "epoch-1", "epoch-1-two-workers"],
)
def test_a_resumed_stage_ends_bit_identical_to_an_uninterrupted_one(
    world, tmp_path, uninterrupted, workers, stop_at, checkpoint
):
    phrase_trainer(world, tmp_path, workers, stop_at=stop_at).train()  # "killed" after step stop_at
    resumed = phrase_trainer(world, tmp_path, workers)
    resumed.train(resume_from_checkpoint=str(tmp_path / "stage" / f"checkpoint-{checkpoint}"))

    assert resumed.state.global_step == STEPS
    final = weights(resumed)
    differing = [name for name, value in uninterrupted.items() if not torch.equal(value, final[name])]
    assert differing == []


def collated(trainer: MSPTrainer, epoch: int) -> dict[int, torch.Tensor]:
    """The region mask and MLM labels each dataset index got in `epoch`, as the training loader collates."""
    loader = trainer.get_train_dataloader()
    loader.set_epoch(epoch)
    drawn = {}
    for batch, keys in zip(loader, loader.batch_sampler, strict=True):
        for row, (_, index) in enumerate(keys):
            drawn[index] = torch.cat([batch["region_mask"][row].long(), batch["mlm_labels"][row]])
    return drawn


def test_every_epoch_draws_new_masks_and_workers_draw_what_one_process_draws(world, tmp_path):
    one = phrase_trainer(world, tmp_path / "one")
    two = phrase_trainer(world, tmp_path / "two", workers=2)
    first, second = collated(two, 0), collated(two, 1)

    assert len(first) == len(second) == 62
    repeated = [index for index in first if torch.equal(first[index], second[index])]
    assert repeated == []
    single = collated(one, 1)
    assert all(torch.equal(single[index], second[index]) for index in single)


def test_rows_carry_their_epoch_and_index_and_the_sampler_passes_the_epoch_on():
    class Recording(torch.utils.data.Sampler[int]):
        def __init__(self):
            self.epochs = []

        def set_epoch(self, epoch):
            self.epochs.append(epoch)

        def __len__(self):
            return 3

        def __iter__(self):
            return iter([2, 0, 1])

    inner = Recording()
    sampler = EpochIndices(inner)
    sampler.set_epoch(4)
    keys = list(sampler)
    assert keys == [(4, 2), (4, 0), (4, 1)] and inner.epochs == [4]
    rows = IndexedRows([{"text": "a"}, {"text": "b"}, {"text": "c"}]).__getitems__(keys)
    assert rows == [
        {"text": text, EPOCH_FIELD: 4, INDEX_FIELD: index}
        for text, index in zip("cab", (2, 0, 1), strict=True)
    ]
    with pytest.raises(ValueError, match=r"dataset: fields \['epoch'\] would be overwritten"):
        IndexedRows([{"epoch": 1}])[(0, 0)]
