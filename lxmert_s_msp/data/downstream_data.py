"""A prepared data folder as fine-tuning and evaluation read it (`DownstreamData`), and the three kinds of
split a downstream task reads from it: question corpora with an answer vocabulary (VQA, GQA), corpora with a
label per row (NLVR2), and Flickr30k's images with their captions (retrieval).

A data folder has the layout `lxmert_s_msp.data` builds (the synthetic world has it too): `store/` (with
`hard_negatives.npy` for retrieval's hard negatives), `corpora/<task>_<split>/` for VQA (`vqa_train`,
`vqa_val`, ..., each with `answers.json`), GQA (`gqa_*`) and NLVR2 (`nlvr2_*`), and `corpora/flickr30k/`
(one row per image, every Karpathy split) for retrieval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from accelerate import PartialState
from transformers import PretrainedConfig

from lxmert_s_msp.data.corpus_builders import load_answer_vocab
from lxmert_s_msp.data.downstream_collators import retrieval_pairs
from lxmert_s_msp.data.hard_negatives import load_hard_negatives
from lxmert_s_msp.data.store import HARD_NEGATIVES_FILE, FeatureStore
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world

# The world `recipes/pretrain.py` pre-trains on by default (its configs/synthetic.yaml: default settings).
DEFAULT_WORLD = Path("outputs/pretrain/world")


def default_data_folder() -> Path:
    """`outputs/pretrain/world`, so that the default pre-training run's checkpoints are fine-tuned on the
    images and tokenizer they were pre-trained with; generated (on the main process) when absent, reused
    otherwise."""
    state = PartialState()
    with state.main_process_first():
        if state.is_main_process and not (DEFAULT_WORLD / "world.json").is_file():
            generate_world(DEFAULT_WORLD, WorldSettings())
    return DEFAULT_WORLD


@dataclass
class DownstreamData:
    folder: Path
    store: FeatureStore

    @classmethod
    def open(cls, folder: str | Path) -> DownstreamData:
        folder = Path(folder)
        if not (folder / "store").is_dir():
            raise FileNotFoundError(
                f"{folder}: no store/; a data folder holds store/ and corpora/<name>/ "
                "(README, 'The data pipeline')"
            )
        return cls(folder, FeatureStore(folder / "store"))

    def corpus_path(self, corpus: str, split: str) -> Path:
        return self.folder / "corpora" / f"{corpus}_{split}"

    def corpus(
        self, corpus: str, split: str, not_in_world: str | None = None, build_options: str = ""
    ) -> datasets.Dataset:
        """`corpora/<corpus>_<split>`; when it is missing, an error saying how to build it (`build_options`:
        what the command needs beyond its files), or, on a synthetic world, `not_in_world` when given."""
        path = self.corpus_path(corpus, split)
        if path.is_dir():
            return datasets.load_from_disk(str(path))
        if not_in_world is not None and (self.folder / "world.json").is_file():
            raise FileNotFoundError(f"{self.folder} is a synthetic world. {not_in_world}")
        raise FileNotFoundError(
            f"{path}: no {corpus} corpus for split {split!r}; build it with "
            f"`python -m lxmert_s_msp.data.corpora {corpus} --store {self.folder / 'store'} --out {path} ..."
            f"{build_options}` (README, 'The data pipeline')"
        )

    def hard_negatives(self) -> np.ndarray | None:
        """The store's hard negatives when built (`python -m lxmert_s_msp.data.hard_negatives`), else None."""
        if not (self.store.path / HARD_NEGATIVES_FILE).is_file():
            return None
        return load_hard_negatives(self.store.path)


def retrieval_split(data_folder: str | Path, split: str) -> datasets.Dataset:
    """The images of one split of a data folder's Flickr30k-style corpus (`corpora/flickr30k`), with their
    store rows and captions."""
    corpus_path = Path(data_folder) / "corpora" / "flickr30k"
    if not corpus_path.is_dir():
        raise FileNotFoundError(
            f"{corpus_path}: no retrieval corpus; build it with "
            "`python -m lxmert_s_msp.data.corpora flickr30k`"
        )
    corpus = datasets.load_from_disk(str(corpus_path))
    selected = corpus.filter(lambda row: row["split"] == split, desc=f"Selecting {split}")
    if len(selected) == 0:
        raise ValueError(
            f"{corpus_path}: no images in split {split!r}; its splits are {sorted(set(corpus['split']))}"
        )
    return selected


@dataclass(frozen=True)
class TaskSplits:
    """Where a downstream task's splits are in a data folder and what its labels are; the defaults are
    those of a task without label names (retrieval). `not_in_world`: why the synthetic world has no such
    corpus (GQA), which a run without --data_dir is refused with."""

    not_in_world: str | None = field(default=None, kw_only=True)

    def split(
        self, data: DownstreamData, split: str, labels: Sequence[str] | None = None
    ) -> datasets.Dataset:
        """A split's rows; `labels`: those of the model that will score them (None: the training split's)."""
        raise NotImplementedError

    def corpus_folders(self, data: DownstreamData) -> list[Path]:
        """The corpora fine-tuning reads: those of the training split and of val."""
        raise NotImplementedError

    def has_split(self, data: DownstreamData, split: str) -> bool:
        """Whether `data` holds the split (a test split is optional)."""
        raise NotImplementedError

    def labels(self, data: DownstreamData) -> list[str] | None:
        """The names of the task head's outputs, in order, for a model trained on `data`."""
        return None

    def labels_of(self, config: PretrainedConfig, origin: str | Path) -> list[str] | None:
        """The names of a fine-tuned model's outputs, from its `config`."""
        return None

    def head_settings(self, labels: Sequence[str] | None) -> dict[str, Any]:
        """Config fields the task head needs; the label names travel in the config so a checkpoint maps its
        predictions back without the data folder."""
        return {}

    def training_rows(self, rows: datasets.Dataset) -> datasets.Dataset:
        """The rows the Trainer iterates over, from the training split's."""
        return rows

    def labelled(self, rows: datasets.Dataset) -> bool:
        return True

    def predictions(
        self, rows: datasets.Dataset, predicted: Sequence[int], labels: Sequence[str] | None
    ) -> list[dict[str, Any]] | None:
        """What an evaluation writes per row besides the metrics (None: nothing)."""
        return None


@dataclass(frozen=True)
class QuestionCorpora(TaskSplits):
    """VQA / GQA: `corpora/<corpus>_<split>` of questions with soft answer scores. The head's outputs are the
    answers of the training corpus (`answers.json`), and every other split must be built with them, as the
    labels keep only the answers of the vocabulary a corpus was built with."""

    corpus: str

    def split(
        self, data: DownstreamData, split: str, labels: Sequence[str] | None = None
    ) -> datasets.Dataset:
        path = data.corpus_path(self.corpus, split)
        if path.is_dir():
            self._check_answer_vocab(data, path, labels)
        vocabulary = " --answers <the training split's vocabulary>"
        return data.corpus(self.corpus, split, self.not_in_world, vocabulary)

    def corpus_folders(self, data: DownstreamData) -> list[Path]:
        return [data.corpus_path(self.corpus, split) for split in ("train", "val")]

    def has_split(self, data: DownstreamData, split: str) -> bool:
        return data.corpus_path(self.corpus, split).is_dir()

    def labels(self, data: DownstreamData) -> list[str]:
        return load_answer_vocab(data.corpus_path(self.corpus, "train"))

    def labels_of(self, config: PretrainedConfig, origin: str | Path) -> list[str]:
        if len(config.id2label) != config.num_qa_labels:
            raise ValueError(
                f"{origin}: config.id2label names {len(config.id2label)} answers for "
                f"{config.num_qa_labels} outputs; models fine-tuned by `recipes/finetune.py` carry them"
            )
        return [config.id2label[index] for index in range(config.num_qa_labels)]

    def head_settings(self, labels: Sequence[str] | None) -> dict[str, Any]:
        return {"num_qa_labels": len(labels), "id2label": dict(enumerate(labels))}

    def labelled(self, rows: datasets.Dataset) -> bool:
        return any(rows["answers"])

    def predictions(
        self, rows: datasets.Dataset, predicted: Sequence[int], labels: Sequence[str] | None
    ) -> list[dict[str, Any]]:
        """Every question's predicted answer, all an unlabelled test split yields."""
        return [
            {"question_id": question, "answer": labels[index]}
            for question, index in zip(rows["question_id"], predicted, strict=True)
        ]

    def _check_answer_vocab(self, data: DownstreamData, path: Path, answers: Sequence[str] | None) -> None:
        source = "the model's config.id2label" if answers is not None else f"{self.corpus}_train"
        if answers is None:
            if path.name == f"{self.corpus}_train":
                return
            answers = self.labels(data)
        if load_answer_vocab(path) != list(answers):
            train = data.corpus_path(self.corpus, "train")
            raise ValueError(
                f"{path}: built with another answer vocabulary than {source} ({len(answers)} answers), whose "
                "answers the classifier predicts: its labels would drop answers the model can give. "
                f"Rebuild it with `python -m lxmert_s_msp.data.corpora {self.corpus} ... --answers {train}` "
                "(or the vocabulary the model was trained with)"
            )


@dataclass(frozen=True)
class LabelledCorpora(TaskSplits):
    """NLVR2: `corpora/<corpus>_<split>` with a label id per row, named by `names`."""

    corpus: str
    names: tuple[str, ...]

    def split(
        self, data: DownstreamData, split: str, labels: Sequence[str] | None = None
    ) -> datasets.Dataset:
        return data.corpus(self.corpus, split, self.not_in_world)

    def corpus_folders(self, data: DownstreamData) -> list[Path]:
        return [data.corpus_path(self.corpus, split) for split in ("train", "val")]

    def has_split(self, data: DownstreamData, split: str) -> bool:
        return data.corpus_path(self.corpus, split).is_dir()

    def labels(self, data: DownstreamData) -> list[str]:
        return list(self.names)

    def head_settings(self, labels: Sequence[str] | None) -> dict[str, Any]:
        return {"id2label": dict(enumerate(labels))}


@dataclass(frozen=True)
class Flickr30kImages(TaskSplits):
    """Retrieval: the images of a split of `corpora/flickr30k` with their captions (`retrieval_split`); the
    Trainer iterates over their (image, caption) pairs (`retrieval_pairs`)."""

    def split(
        self, data: DownstreamData, split: str, labels: Sequence[str] | None = None
    ) -> datasets.Dataset:
        return retrieval_split(data.folder, split)

    def corpus_folders(self, data: DownstreamData) -> list[Path]:
        return [data.folder / "corpora" / "flickr30k"]

    def has_split(self, data: DownstreamData, split: str) -> bool:
        path = data.folder / "corpora" / "flickr30k"
        return path.is_dir() and split in set(datasets.load_from_disk(str(path))["split"])

    def training_rows(self, rows: datasets.Dataset) -> datasets.Dataset:
        return retrieval_pairs(rows)
