"""Training rows that carry their epoch and dataset index, from which the collators seed each batch.

A collator that seeded its batches by counting its calls drew the masks and negatives of steps 1, 2, ... again
after a resume (the `Trainer` skips the trained batches without collating them), and with DataLoader workers
in every epoch (each epoch's workers start from fresh copies). Here the sampler yields (epoch, index) pairs
(`EpochIndices`) and the dataset answers such a pair with the row plus both numbers (`IndexedRows`), which
`lxmert_s_msp.data.collators.batch_generator` seeds the batch with. The pairs pass unchanged through
accelerate's per-process batch sharding, its skipping of trained batches and the workers' index queues, so a
resumed run, any number of workers and every process collate exactly the batches of one uninterrupted process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import datasets
from torch.utils.data import Dataset, Sampler

from lxmert_s_msp.data.collators import EPOCH_FIELD, INDEX_FIELD


class EpochIndices(Sampler[tuple[int, int]]):
    """(epoch, index) for every index of `sampler`; the epoch is the one `set_epoch` (called by the `Trainer`
    before each epoch) last set, and is passed on to `sampler`, whose order may depend on it."""

    def __init__(self, sampler: Sampler[int]):
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, index) for index in self.sampler)


class IndexedRows(Dataset):
    """`dataset` (map-style, of dict rows) looked up by (epoch, index) pairs: each row with `EPOCH_FIELD` and
    `INDEX_FIELD` added."""

    def __init__(self, dataset: Dataset | datasets.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[dict[str, Any]]:
        """A batch's rows in one read when the dataset reads batches (`datasets.Dataset` does)."""
        indices = [index for _, index in keys]
        read = getattr(self.dataset, "__getitems__", None)
        rows = read(indices) if read is not None else [self.dataset[index] for index in indices]
        clashing = {EPOCH_FIELD, INDEX_FIELD} & set(rows[0]) if rows else set()
        if clashing:
            raise ValueError(
                f"dataset: fields {sorted(clashing)} would be overwritten by the epoch and index that seed "
                "each batch; rename them"
            )
        return [
            {**row, EPOCH_FIELD: epoch, INDEX_FIELD: index}
            for row, (epoch, index) in zip(rows, keys, strict=True)
        ]
