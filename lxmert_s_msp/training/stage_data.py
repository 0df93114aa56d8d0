"""What a curriculum stage trains on: the prepared data folder, each stage's corpus and collator.

A data folder holds what `processing` builds (the synthetic world has the same layout):
`store/` (+ `hard_negatives.npy` for ITM_HS), `corpora/<name>/` (`save_to_disk` corpora with `image_index`
and `text`, or `phrases` lists that `phrase_rows` packs into texts of the stage's length),
`objects_vocab.txt`, `attributes_vocab.txt` and, optionally, `tokenizer/`. Each stage tokenises with its own
text length (`max_length`); how many texts it cuts is logged and kept in `StageData.truncated`.

A stage with several sources (Table 4's "T+P+S" mixes all corpora in one stage) trains each batch on one
source with that source's tasks: `SourceBlockSampler` orders the examples so that every per-device batch
comes from a single corpus, and `MixedSourceCollator` hands the batch to that corpus's collator.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from accelerate import PartialState
from torch.utils.data import Sampler
from transformers import PreTrainedTokenizerBase

from lxmert_s_msp.data.collators import MSPCollator, count_truncated
from lxmert_s_msp.data.corpus_builders import check_rows_point_at_store, phrase_rows
from lxmert_s_msp.data.hard_negatives import load_hard_negatives
from lxmert_s_msp.data.readers import read_class_vocab
from lxmert_s_msp.data.store import FeatureStore
from lxmert_s_msp.data.tokenizer import load_tokenizer
from lxmert_s_msp.training.curriculum import Source, StageConfig, TrainingConfig
from modeling_lxmert_s import tasks_need
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor

SOURCE_COLUMN = "source"


@dataclass
class PretrainingData:
    """The shared image side, tokenizer and vocabularies of every stage, opened once per run."""

    folder: Path
    store: FeatureStore
    tokenizer: PreTrainedTokenizerBase
    object_vocab: list[str]
    attribute_vocab: list[str]
    checked_corpora: set[str] = field(default_factory=set)

    @classmethod
    def open(cls, folder: str | Path, tokenizer: str | None = None) -> PretrainingData:
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
            tokenizer=load_tokenizer(tokenizer),
            object_vocab=read_class_vocab(folder / "objects_vocab.txt"),
            attribute_vocab=read_class_vocab(folder / "attributes_vocab.txt"),
        )

    def processor(self, max_length: int) -> LxmertSProcessor:
        """The processor of a stage: the run's tokenizer, the stage's text length."""
        return LxmertSProcessor(self.tokenizer, max_length=max_length)

    def model_sizes(self) -> dict[str, int]:
        """The `LxmertSConfig` sizes the data fixes: vocabularies and the RoI feature dimension."""
        return {
            "vocab_size": len(self.tokenizer),
            "num_object_labels": len(self.object_vocab),
            "num_attr_labels": len(self.attribute_vocab),
            "visual_feat_dim": self.store.feature_dim,
        }

    def corpus(self, name: str) -> datasets.Dataset:
        """A stage corpus, checked (once per run) to point at this store's images."""
        path = self.folder / "corpora" / name
        if not path.is_dir():
            raise FileNotFoundError(
                f"{path}: no corpus {name!r}; build it with `python -m lxmert_s_msp.data.corpora`"
            )
        corpus = datasets.load_from_disk(str(path))
        needed = {"image_id", "image_index"}
        if not needed <= set(corpus.column_names) or not {"text", "phrases"} & set(corpus.column_names):
            raise ValueError(
                f"{path}: a stage corpus has `image_id`, `image_index` and `text` (or `phrases`); it has "
                f"{corpus.column_names}"
            )
        if name not in self.checked_corpora:
            check_rows_point_at_store(corpus, self.store, str(path))
            self.checked_corpora.add(name)
        return corpus

    def source_texts(self, source: Source, processor: LxmertSProcessor, stage: str) -> datasets.Dataset:
        """A source's (`image_index`, `text`) rows at the stage's text length; phrase lists are packed."""
        name = f"stage {stage!r}, corpus {source.corpus!r}"
        corpus = self.corpus(source.corpus)
        if "phrases" in corpus.column_names:
            corpus = phrase_rows(corpus, processor, name)
        return corpus.select_columns(["image_index", "text"])

    def collator(
        self,
        source: Source,
        stage: StageConfig,
        processor: LxmertSProcessor,
        negative_images: np.ndarray,
        training: TrainingConfig,
        seed: int,
    ) -> MSPCollator:
        """The source's collator; ITM negatives are drawn among `negative_images`, its corpus's images."""
        return MSPCollator(
            self.store,
            processor,
            source.tasks,
            object_vocab=self.object_vocab,
            attribute_vocab=self.attribute_vocab,
            # load_hard_negatives names the file and how to build it when it is missing
            hard_negatives=(
                load_hard_negatives(self.store.path) if tasks_need(source.tasks, "hard_negatives") else None
            ),
            negative_images=negative_images,
            seed=seed,
            mlm_probability=training.mlm_probability,
            class_word_mlm_probability=stage.mlm_class_word_probability,
            relation_word_mlm_probability=stage.mlm_relation_word_probability,
            relation_subject_mlm_probability=stage.mlm_relation_subject_probability,
            binding_negatives=stage.binding_negatives and "itm_vsc" in source.tasks,
            region_negatives=stage.region_negatives and "itm_vsc" in source.tasks,
            relation_side_confidence=stage.relation_side_confidence if "rpt" in source.tasks else None,
            region_mask_probability=training.region_mask_probability,
            triplet_shuffle_probability=training.triplet_shuffle_probability,
            mismatch_probability=training.mismatch_probability,
        )


@dataclass
class StageData:
    """A stage's training set, collator and processor; `truncated` counts the texts of each corpus longer
    than the stage's `max_length`; `source_lengths` is set when the stage mixes several corpora."""

    dataset: datasets.Dataset
    collator: MSPCollator | MixedSourceCollator
    processor: LxmertSProcessor
    truncated: dict[str, int]
    source_lengths: list[int] | None = None


def stage_data(data: PretrainingData, stage: StageConfig, training: TrainingConfig, seed: int) -> StageData:
    processor = data.processor(stage.max_length)
    parts, collators, truncated = [], [], {}
    for index, source in enumerate(stage.sources):
        texts = data.source_texts(source, processor, stage.name)
        truncated[source.corpus] = count_truncated(
            texts["text"], processor, f"stage {stage.name!r}, corpus {source.corpus!r}"
        )
        images = np.unique(texts["image_index"])
        collators.append(data.collator(source, stage, processor, images, training, seed + index))
        if negatives := collators[-1].describe_negatives():
            PartialState().print(f"Stage {stage.name!r}, corpus {source.corpus!r}: ITM negatives {negatives}")
        parts.append(texts)
    if len(stage.sources) == 1:
        return StageData(parts[0], collators[0], processor, truncated)
    parts = [part.add_column(SOURCE_COLUMN, [index] * len(part)) for index, part in enumerate(parts)]
    return StageData(
        datasets.concatenate_datasets(parts),
        MixedSourceCollator(collators),
        processor,
        truncated,
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
