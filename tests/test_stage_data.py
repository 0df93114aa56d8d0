"""Stage data: mixed-corpus stages give single-corpus batches; the data folder is checked when opened."""

from __future__ import annotations

import numpy as np
import pytest

from training.stage_data import SOURCE_COLUMN, MixedSourceCollator, PretrainingData, SourceBlockSampler


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
