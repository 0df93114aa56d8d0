"""What a curriculum stage trains on: the prepared data folder, each stage's corpus and collator.

A data folder holds what `processing` builds (the synthetic world has the same layout):
`store/` (+ `hard_negatives.npy` for ITM_HS), `corpora/<name>/` (`save_to_disk` corpora with `image_index`
and `text`), `objects_vocab.txt`, `attributes_vocab.txt` and, optionally, `tokenizer/`.

A stage with several sources (Table 4's "T+P+S" mixes all corpora in one stage) trains each batch on one
source with that source's tasks: `SourceBlockSampler` orders the examples so that every per-device batch
comes from a single corpus, and `MixedSourceCollator` hands the batch to that corpus's collator.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import Sampler

from processing.collators import MSPCollator
from processing.hard_negatives import load_hard_negatives
from processing.processor import LxmertSProcessor
from processing.readers import read_class_vocab
from processing.store import HARD_NEGATIVES_FILE, FeatureStore
from processing.tokenizer import load_tokenizer
from training.curriculum import StageConfig, TrainingConfig

SOURCE_COLUMN = "source"


@dataclass
class PretrainingData:
    """The shared image side and vocabularies of every stage, opened once per run."""

    folder: Path
    store: FeatureStore
    processor: LxmertSProcessor
    object_vocab: list[str]
    attribute_vocab: list[str]

    @classmethod
    def open(cls, folder: str | Path, tokenizer: str | None = None, max_length: int = 20) -> PretrainingData:
        folder = Path(folder)
        for needed in ("store", "objects_vocab.txt", "attributes_vocab.txt"):
            if not (folder / needed).exists():
                raise FileNotFoundError(
                    f"{folder}: no {needed}; a data folder holds store/, corpora/<name>/, objects_vocab.txt "
                    "and attributes_vocab.txt (see README, 'The data pipeline')"
                )
        if tokenizer is None:
            tokenizer = str(folder / "tokenizer") if (folder / "tokenizer").is_dir() else "bert-base-uncased"
        return cls(
            folder=folder,
            store=FeatureStore(folder / "store"),
            processor=LxmertSProcessor(load_tokenizer(tokenizer), max_length=max_length),
            object_vocab=read_class_vocab(folder / "objects_vocab.txt"),
            attribute_vocab=read_class_vocab(folder / "attributes_vocab.txt"),
        )

    def model_sizes(self) -> dict[str, int]:
        """The `LxmertSConfig` sizes the data fixes: vocabularies and the RoI feature dimension."""
        return {
            "vocab_size": len(self.processor.tokenizer),
            "num_object_labels": len(self.object_vocab),
            "num_attr_labels": len(self.attribute_vocab),
            "visual_feat_dim": self.store.feature_dim,
        }

    def corpus(self, name: str) -> datasets.Dataset:
        path = self.folder / "corpora" / name
        if not path.is_dir():
            raise FileNotFoundError(
                f"{path}: no corpus {name!r}; build it with `python -m processing.corpora`"
            )
        corpus = datasets.load_from_disk(str(path))
        missing = {"image_index", "text"} - set(corpus.column_names)
        if missing:
            raise ValueError(
                f"{path}: corpus lacks the columns {sorted(missing)}; it has {corpus.column_names}"
            )
        return corpus

    def collator(self, tasks: Sequence[str], training: TrainingConfig, seed: int) -> MSPCollator:
        hard_negatives = None
        if "itm" in tasks and (self.store.path / HARD_NEGATIVES_FILE).is_file():
            hard_negatives = load_hard_negatives(self.store.path)
        return MSPCollator(
            self.store,
            self.processor,
            tasks,
            object_vocab=self.object_vocab,
            hard_negatives=hard_negatives,
            seed=seed,
            mlm_probability=training.mlm_probability,
            region_mask_probability=training.region_mask_probability,
            triplet_shuffle_probability=training.triplet_shuffle_probability,
            mismatch_probability=training.mismatch_probability,
        )


@dataclass
class StageData:
    """A stage's training set and collator; `source_lengths` is set when it mixes several corpora."""

    dataset: datasets.Dataset
    collator: MSPCollator | MixedSourceCollator
    source_lengths: list[int] | None = None


def stage_data(data: PretrainingData, stage: StageConfig, training: TrainingConfig, seed: int) -> StageData:
    if len(stage.sources) == 1:
        source = stage.sources[0]
        corpus = data.corpus(source.corpus).select_columns(["image_index", "text"])
        return StageData(corpus, data.collator(source.tasks, training, seed))
    parts = []
    for index, source in enumerate(stage.sources):
        corpus = data.corpus(source.corpus).select_columns(["image_index", "text"])
        parts.append(corpus.add_column(SOURCE_COLUMN, [index] * len(corpus)))
    collators = [data.collator(source.tasks, training, seed + i) for i, source in enumerate(stage.sources)]
    return StageData(
        datasets.concatenate_datasets(parts),
        MixedSourceCollator(collators),
        source_lengths=[len(part) for part in parts],
    )


class MixedSourceCollator:
    """Collate a batch whose rows all come from one source with that source's collator."""

    def __init__(self, collators: Sequence[MSPCollator]):
        self.collators = list(collators)

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        sources = {row[SOURCE_COLUMN] for row in rows}
        if len(sources) != 1:
            raise ValueError(
                f"a mixed-stage batch must come from one source, got rows of sources {sorted(sources)}: "
                "use SourceBlockSampler with the per-device batch size"
            )
        return self.collators[sources.pop()](rows)


class SourceBlockSampler(Sampler[int]):
    """Indices of a concatenation of sources, in shuffled blocks of `block_size` from one source each.

    Each source is shuffled and cut into whole blocks (the remainder, fewer than `block_size` examples, sits
    the epoch out; a different one each epoch), and the blocks of all sources are shuffled together, so
    sources are interleaved in proportion to their sizes. With `block_size` = the per-device batch size every
    batch is single-source, also when accelerate deals the batches out to several processes. The order
    depends only on `seed` and the epoch (`set_epoch`), so a resumed run sees the same batches.
    """

    def __init__(self, source_lengths: Sequence[int], block_size: int, seed: int = 0):
        if block_size < 1:
            raise ValueError(f"block_size: expected at least 1, got {block_size}")
        short = [length for length in source_lengths if length < block_size]
        if short:
            raise ValueError(
                f"source_lengths: every source needs at least one block of {block_size} examples, got "
                f"{list(source_lengths)}"
            )
        self.source_lengths = list(source_lengths)
        self.block_size = block_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(length // self.block_size for length in self.source_lengths) * self.block_size

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        offsets = np.cumsum([0, *self.source_lengths[:-1]])
        blocks = []
        for offset, length in zip(offsets, self.source_lengths, strict=True):
            whole = length // self.block_size * self.block_size
            blocks.append(offset + rng.permutation(length)[:whole].reshape(-1, self.block_size))
        order = np.concatenate(blocks)[rng.permutation(sum(len(b) for b in blocks))]
        return iter(order.reshape(-1).tolist())
