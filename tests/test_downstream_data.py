"""A data folder's downstream splits: where each task finds them and the answer vocabulary they must share."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lxmert_s_msp.data.corpus_builders import load_answer_vocab
from lxmert_s_msp.data.downstream_data import DownstreamData
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.training.downstream_tasks import TASKS


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return generate_world(tmp_path_factory.mktemp("data") / "world", WorldSettings(images=40, feature_dim=32))


def test_a_val_split_built_with_another_answer_vocabulary_is_refused(world, tmp_path):
    data = tmp_path / "data"
    (data / "corpora").mkdir(parents=True)
    (data / "store").symlink_to(world / "store")
    for split in ("train", "val"):
        (data / "corpora" / f"vqa_{split}").symlink_to(world / "corpora" / f"vqa_{split}")
    shutil.copytree(world / "corpora" / "vqa_val", data / "corpora" / "vqa_own", symlinks=False)
    train, vqa = DownstreamData.open(data), TASKS["vqa"].data
    assert len(vqa.split(train, "val")) == 12  # built with the training vocabulary: accepted
    own = data / "corpora" / "vqa_own"
    (own / "answers.json").write_text(json.dumps(load_answer_vocab(own)[:3]))  # as if built from val alone
    with pytest.raises(ValueError, match=r"vqa_own: built with another answer vocabulary than vqa_train"):
        vqa.split(train, "own")
    with pytest.raises(ValueError, match=r"another answer vocabulary than the model's config.id2label"):
        vqa.split(train, "val", labels=["yes", "no"])
