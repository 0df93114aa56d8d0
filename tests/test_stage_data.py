"""Stage data: mixed-corpus stages give single-corpus batches; the data folder is checked when opened; each
stage tokenises at its own length and counts what it cuts; ITM negatives never come from held-out images."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from lxmert_s_msp.data.hard_negatives import load_hard_negatives
from lxmert_s_msp.data.store import HARD_NEGATIVES_FILE
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.training.curriculum import Source, StageConfig, TrainingConfig
from lxmert_s_msp.training.stage_data import (
    SOURCE_COLUMN,
    MixedSourceCollator,
    PretrainingData,
    SourceBlockSampler,
    stage_data,
)


def _blocks(sampler: SourceBlockSampler) -> np.ndarray:
    return np.array(list(sampler)).reshape(-1, sampler.block_size)


def test_every_block_comes_from_one_source_and_no_index_repeats():
    lengths = [10, 23, 7]
    sampler = SourceBlockSampler(lengths, block_size=4, seed=3)
    blocks = _blocks(sampler)
    bounds = np.cumsum([0, *lengths])
    source_of = np.searchsorted(bounds, blocks, side="right") - 1
    assert (source_of == source_of[:, :1]).all()
    assert len(np.unique(blocks)) == blocks.size == len(sampler) == (2 + 5 + 1) * 4
    # every source contributes all its whole blocks, so the mix follows the corpus sizes
    assert np.bincount(source_of[:, 0], minlength=3).tolist() == [2, 5, 1]
    # sources are interleaved, not run one after another
    assert len(set(source_of[:, 0].tolist())) == 3 and not (np.diff(source_of[:, 0]) >= 0).all()


def test_the_order_depends_on_seed_and_epoch_only():
    first, again = SourceBlockSampler([50, 50], 5, seed=1), SourceBlockSampler([50, 50], 5, seed=1)
    assert list(first) == list(again)
    first.set_epoch(1)
    assert list(first) != list(again)
    again.set_epoch(1)
    assert list(first) == list(again)
    assert list(SourceBlockSampler([50, 50], 5, seed=2)) != list(SourceBlockSampler([50, 50], 5, seed=1))


def test_a_source_smaller_than_a_block_is_refused():
    with pytest.raises(ValueError, match="at least one block of 8"):
        SourceBlockSampler([20, 5], block_size=8)


def test_mixed_collator_dispatches_on_the_source_and_refuses_mixed_batches():
    calls = []
    collator = MixedSourceCollator(
        [lambda rows: calls.append(("a", len(rows))), lambda rows: calls.append(("b", len(rows)))]
    )
    collator([{SOURCE_COLUMN: 1}, {SOURCE_COLUMN: 1}])
    assert calls == [("b", 2)]
    with pytest.raises(ValueError, match=r"one source, got rows of sources \[0, 1\]"):
        collator([{SOURCE_COLUMN: 0}, {SOURCE_COLUMN: 1}])


def test_a_folder_without_the_pipeline_files_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no store"):
        PretrainingData.open(tmp_path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(
        tmp_path_factory.mktemp("world") / "world", WorldSettings(images=40, feature_dim=16)
    )


def stage(corpus: str, tasks: list[str], max_length: int = 20) -> StageConfig:
    return StageConfig(
        name="s",
        sources=[Source(corpus, tasks)],
        epochs=1,
        batch_size=8,
        learning_rate=1e-3,
        max_length=max_length,
    )


def test_each_stage_tokenises_at_its_length_and_counts_what_it_cuts(world, caplog):
    data = PretrainingData.open(world)
    with caplog.at_level(logging.WARNING, logger="lxmert_s_msp.data.collators"):
        short = stage_data(data, stage("tokens", ["mlm"], max_length=20), TrainingConfig(), seed=0)
    assert short.truncated == {"tokens": 32}  # 36 labels are 38 tokens: every text of the 32 images
    assert "stage 's', corpus 'tokens': 32 of 32 texts are longer than max_length 20" in caplog.text
    whole = stage_data(data, stage("tokens", ["mlm"], max_length=38), TrainingConfig(), seed=0)
    assert whole.truncated == {"tokens": 0}
    batch = whole.collator([whole.dataset[i] for i in range(4)], seed=0)
    assert batch["input_ids"].shape == (4, 38) and whole.processor.max_length == 38
    # the phrase corpus is packed at the stage's length, so nothing is cut
    phrases = stage_data(data, stage("phrases", ["mlm"]), TrainingConfig(), seed=0)
    assert phrases.truncated == {"phrases": 0} and len(phrases.dataset) > len(data.corpus("phrases"))


def test_itm_negatives_are_never_held_out_images(world, monkeypatch):
    data = PretrainingData.open(world)
    train = set(data.corpus("captions")["image_index"])
    held_out = set(range(len(data.store))) - train
    hard = load_hard_negatives(data.store.path)
    assert set(hard[sorted(train)].ravel()) & held_out  # the file lists val/test images as neighbours
    reads = []
    read = data.store.read
    monkeypatch.setattr(data.store, "read", lambda rows: reads.append(np.asarray(rows)) or read(rows))
    for tasks in (["itm"], ["itm_hs"]):
        trained = stage_data(data, stage("captions", tasks), TrainingConfig(mismatch_probability=1.0), seed=0)
        for start in range(0, len(trained.dataset), 40):
            trained.collator(
                [trained.dataset[i] for i in range(start, min(start + 40, len(trained.dataset)))], seed=start
            )
    fed = set(np.concatenate(reads).tolist())
    assert fed <= train and len(fed) > len(train) // 2


def test_itm_hs_without_the_hard_negative_file_names_it(world, tmp_path):
    copy = shutil.copytree(world, tmp_path / "world")
    (copy / "store" / HARD_NEGATIVES_FILE).unlink()
    data = PretrainingData.open(copy)
    with pytest.raises(FileNotFoundError, match=r"store/hard_negatives\.npy is missing: build it with"):
        stage_data(data, stage("captions", ["itm_hs"]), TrainingConfig(), seed=0)
    assert (
        stage_data(data, stage("captions", ["itm"]), TrainingConfig(), seed=0).collator.hard_negatives is None
    )
