"""The data folder of docs/data.md, built by that page's own commands from small files in the exact public
formats, is the folder pre-training (the paper's curriculum) and fine-tuning read: every path of its table
exists, and every check the runs make before training passes."""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from lxmert_s_msp.data import corpora, features, hard_negatives
from lxmert_s_msp.data.downstream_data import DownstreamData
from lxmert_s_msp.data.readers import OBJ36_FIELDS
from lxmert_s_msp.data.tokenizer import build_wordpiece_tokenizer
from lxmert_s_msp.training.curriculum import load_curriculum
from lxmert_s_msp.training.downstream_tasks import TASKS
from lxmert_s_msp.training.pretraining import check_stages
from lxmert_s_msp.training.stage_data import PretrainingData

REPO = Path(__file__).resolve().parents[1]
PAGE = (REPO / "docs" / "data.md").read_text()
COMMANDS = {
    "lxmert_s_msp.data.features": features.main,
    "lxmert_s_msp.data.hard_negatives": hard_negatives.main,
    "lxmert_s_msp.data.corpora": corpora.main,
}
OBJECTS = [f"object{i}" for i in range(1600)]
ATTRIBUTES = [f"attribute{i}" for i in range(400)]
WORDS = [
    "a",
    "the",
    "man",
    "dog",
    "car",
    "tree",
    "red",
    "blue",
    "on",
    "with",
    "is",
    "what",
    "color",
    "are",
    "there",
    "two",
]


def _page_commands() -> list[list[str]]:
    """The `python -m lxmert_s_msp.data.*` lines of docs/data.md's block that builds the data folder."""
    block = PAGE.split("The commands below build that folder", 1)[1].split("```bash", 1)[1].split("```")[0]
    commands = [line for line in block.splitlines() if line.startswith("python -m lxmert_s_msp.data.")]
    return [shlex.split(line) for line in commands]


def _table_paths() -> list[str]:
    """The first column of docs/data.md's data-folder table: a cell's later names sit beside its first; names
    in parentheses are optional."""
    table = PAGE.split("| path in the data folder |", 1)[1].split("\n\n", 1)[0]
    paths = []
    for row in table.splitlines()[2:]:
        cell = re.sub(r"\([^)]*\)", "", row.split("|")[1])
        names = re.findall(r"`([^`]+)`", cell)
        parent = Path(names[0]).parent
        paths += [name if "/" in name.rstrip("/") else str(parent / name) for name in names]
    return paths


def _write_tsv(path: Path, image_ids: list[str], seed: int) -> None:
    """An obj36 file as bottom-up-attention writes it: 10 detections per image, 2048-d features."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)

    def encoded(array, dtype):
        return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode()

    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, OBJ36_FIELDS, delimiter="\t")
        for image_id in image_ids:
            corners = rng.uniform(0, 90, (10, 2))
            writer.writerow(
                {
                    "img_id": image_id,
                    "img_h": 100,
                    "img_w": 100,
                    "objects_id": encoded(rng.integers(0, 1600, 10), "<i8"),
                    "objects_conf": encoded(rng.uniform(0.2, 1, 10), "<f4"),
                    "attrs_id": encoded(rng.integers(0, 400, 10), "<i8"),
                    "attrs_conf": encoded(rng.uniform(0, 1, 10), "<f4"),
                    "num_boxes": 10,
                    "boxes": encoded(np.concatenate([corners, corners + 10], axis=1), "<f4"),
                    "features": encoded(rng.uniform(0, 3, (10, 2048)), "<f4"),
                }
            )


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _public_files(root: Path) -> None:
    """Every input the page's commands name, in its public format, about a handful of images."""
    coco_train = [f"COCO_train2014_{i:012d}" for i in range(1, 9)]
    coco_val = [f"COCO_val2014_{i:012d}" for i in range(1, 5)]
    vg = [str(i) for i in range(100, 104)]
    nlvr2 = {"train": [f"train-{i}-0-img{j}" for i in range(4) for j in range(2)]}
    nlvr2["valid"] = [f"dev-{i}-0-img{j}" for i in range(2) for j in range(2)]
    flickr = [str(1000092795 + i) for i in range(6)]
    _write_tsv(root / "mscoco_imgfeat/train2014_obj36.tsv", coco_train, 0)
    _write_tsv(root / "mscoco_imgfeat/val2014_obj36.tsv", coco_val, 1)
    _write_tsv(root / "vg_gqa_imgfeat/vg_gqa_obj36.tsv", vg, 2)
    _write_tsv(root / "nlvr2_imgfeat/train_obj36.tsv", nlvr2["train"], 3)
    _write_tsv(root / "nlvr2_imgfeat/valid_obj36.tsv", nlvr2["valid"], 4)
    _write_tsv(root / "flickr30k_imgfeat/flickr30k_obj36.tsv", flickr, 5)
    sentences = {"mscoco": ["a man with a dog", "the red car"], "vg": ["a tree"]}
    _write_json(
        root / "lxmert/mscoco_train.json",
        [{"img_id": image, "labelf": {}, "sentf": sentences} for image in [*coco_train, *vg]],
    )
    region = {"region_id": 7, "phrase": "red car", "x": 1, "y": 1, "width": 9, "height": 9}
    _write_json(
        root / "vg/region_descriptions.json",
        [{"id": int(image), "regions": [{**region, "image_id": int(image)}]} for image in vg],
    )
    answers = ["red", "blue", "two"]
    _write_json(root / "vqa/trainval_label2ans.json", answers)
    _write_json(root / "gqa/trainval_label2ans.json", answers)
    for task, name, images in (
        ("vqa", "train", coco_train),
        ("vqa", "minival", coco_val),
        ("gqa", "train", vg),
        ("gqa", "testdev", vg[:2]),
    ):
        questions = [
            {
                "img_id": image,
                "label": {answers[i % 3]: 1.0},
                "question_id": 1000 * i + 1 if task == "vqa" else f"0{i}",
                "sent": "what color is the car?",
            }
            for i, image in enumerate(images)
        ]
        _write_json(root / f"{task}/{name}.json", questions)
    for name, images in nlvr2.items():
        pairs = [
            {
                "identifier": images[2 * i].rsplit("-", 1)[0],
                "img0": images[2 * i],
                "img1": images[2 * i + 1],
                "label": i % 2,
                "sent": "there are two dogs",
                "uid": f"nlvr2_{name}_{i}",
            }
            for i in range(len(images) // 2)
        ]
        _write_json(root / f"nlvr2/{name}.json", pairs)
    splits = ["train", "train", "val", "val", "test", "test"]
    _write_json(
        root / "dataset_flickr30k.json",
        {
            "images": [
                {
                    "filename": f"{image}.jpg",
                    "imgid": i,
                    "split": split,
                    "sentences": [{"raw": "a man with a dog.", "tokens": ["a", "man"]}] * 5,
                    "sentids": list(range(5 * i, 5 * i + 5)),
                }
                for i, (image, split) in enumerate(zip(flickr, splits, strict=True))
            ]
        },
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("public")
    _public_files(root)
    data = root / "data"
    commands = _page_commands()
    assert len(commands) == 12
    here = os.getcwd()
    os.chdir(root)  # the commands' paths are relative, as a user types them
    try:
        for command in commands:
            if command[2] == "lxmert_s_msp.data.corpora" and not (data / "tokenizer").exists():
                # the page's step 3: the detector's class names copied in, the tokenizer saved
                (data / "objects_vocab.txt").write_text("\n".join(OBJECTS) + "\n")
                (data / "attributes_vocab.txt").write_text("\n".join(ATTRIBUTES) + "\n")
                build_wordpiece_tokenizer(WORDS * 3, vocab_size=60).save_pretrained(data / "tokenizer")
            COMMANDS[command[2]](command[3:])
    finally:
        os.chdir(here)
    return data


def test_every_path_of_the_table_is_built_by_the_pages_commands(data):
    paths = _table_paths()
    assert (
        "corpora/vqa_val" in paths and "attributes_vocab.txt" in paths and "store/hard_negatives.npy" in paths
    )
    assert [path for path in paths if not (data / path).exists()] == []


def test_the_paper_curriculum_passes_every_check_made_before_training(data, tmp_path):
    curriculum = load_curriculum(REPO / "recipes" / "configs" / "msp_paper.yaml", data)
    records = check_stages(curriculum, PretrainingData.open(data), tmp_path / "out")
    assert [record["stage"]["name"] for record in records] == ["token", "phrase", "sentence"]


def test_fine_tuning_reads_every_task_of_the_folder(data):
    folder = DownstreamData.open(data)
    assert TASKS["vqa"].data.labels(folder) == ["red", "blue", "two"]
    assert len(TASKS["vqa"].data.split(folder, "val")) == 4
    assert len(TASKS["gqa"].data.split(folder, "val")) == 2
    assert len(TASKS["nlvr2"].data.split(folder, "val")) == 2
    assert len(TASKS["retrieval"].data.split(folder, "test")) == 2
    assert folder.hard_negatives() is not None
