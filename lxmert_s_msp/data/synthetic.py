"""The built-in synthetic visual world: an offline stand-in for COCO / Visual Genome with detector features.

    python -m lxmert_s_msp.data.synthetic data/world                  # the small default (CPU demo)
    python -m lxmert_s_msp.data.synthetic data/world --preset gpu     # a larger world for GPU runs

Images are scenes of objects; each object has a category, a colour, a size, a material and a box. A
simulated detector turns a scene into a fixed number of regions (36 by default): the true objects, some
duplicate boxes, object parts and background, sorted by confidence as a detector does. A region's feature
is a fixed random projection of what it is (category, colour, size, material) and where it is (its box),
plus noise, through a ReLU like a CNN's pooled features, so what a region is can be learned from its
feature. The detector's labels are right most of the time and otherwise a plausible other class, with a
lower confidence.

From the scenes the generator writes what real data provides, in the real formats: the feature store,
Visual Genome class vocabularies, VG `region_descriptions.json` (some phrases with verbs, for the verb
filter), COCO-style captions, LXMERT-style VQA json whose soft scores come from ten simulated annotators,
LXMERT-style NLVR2 json, and a Karpathy-style retrieval json with five captions per image, then reads them
back through `lxmert_s_msp.data.readers` into the corpora of `lxmert_s_msp.data.corpus_builders`. Downstream
files are split by image into train / val / test; the pre-training corpora use the train images only.

The features go straight into the store with `write_store` (an obj36 TSV of a 2,048-d world would be
several hundred MB written only to be parsed again); everything after the store runs the real-data code.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from lxmert_s_msp.cli import accept_underscores, run
from lxmert_s_msp.data.corpus_builders import (
    caption_corpus,
    flickr30k_dataset,
    nlvr2_dataset,
    phrase_corpus,
    qa_dataset,
    save_corpus,
    token_corpus,
)
from lxmert_s_msp.data.folder_lock import folder_lock
from lxmert_s_msp.data.hard_negatives import build_hard_negatives
from lxmert_s_msp.data.readers import (
    build_answer_vocab,
    read_class_vocab,
    read_coco_captions,
    read_flickr30k_karpathy,
    read_lxmert_nlvr2_json,
    read_lxmert_qa_json,
    read_vg_region_descriptions,
    vqa_soft_scores,
)
from lxmert_s_msp.data.store import FeatureStore, atomic_write_text, replace_folder, write_store_from_chunks
from lxmert_s_msp.data.tokenizer import build_wordpiece_tokenizer

# fmt: off
CATEGORIES = (
    "man", "woman", "child", "dog", "cat", "horse", "bird", "cow", "sheep", "car", "bus", "bike", "truck",
    "boat", "train", "tree", "house", "chair", "table", "bench", "cup", "bottle", "bowl", "plate", "pizza",
    "banana", "apple", "cake", "umbrella", "bag", "kite", "ball", "clock", "lamp", "phone", "book", "vase",
)
# fmt: on
PARTS = {
    "man": "head",
    "woman": "head",
    "child": "head",
    "car": "wheel",
    "bus": "wheel",
    "truck": "wheel",
    "bike": "wheel",
    "house": "window",
    "table": "leg",
    "chair": "leg",
    "dog": "tail",
    "cat": "tail",
    "horse": "tail",
    "tree": "leaf",
}
IRREGULAR_PLURALS = {"man": "men", "woman": "women", "child": "children", "sheep": "sheep", "bus": "buses",
                     "bench": "benches", "leaf": "leaves"}  # fmt: skip
BACKGROUND = ("sky", "grass", "wall", "road", "floor", "water")
OBJECT_CLASSES = (*CATEGORIES, *sorted(set(PARTS.values())), *BACKGROUND)
COLOURS = ("red", "blue", "green", "yellow", "white", "black", "brown", "orange")
SIZES = ("small", "large")
MATERIALS = ("wooden", "metal", "plastic")
ATTRIBUTES = (*COLOURS, *SIZES, *MATERIALS)
VERBS = ("riding", "holding", "looking at", "standing near", "walking past", "carrying")
ANNOTATORS = 10
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Visual Genome ids are integers; the store keeps them as strings, as LXMERT's VG features do.
SYNTHETIC_IMAGE_IDS = 1_000_000
# The version of what a world holds, in its world.json beside the settings: a world built by an older
# generator is not reused as if it were this one's. 2: the VQA corpora carry each question's type; 3: captions
# and phrases count the groups of objects of one category ("two dogs").
WORLD_FORMAT = 3


def plural(noun: str) -> str:
    return IRREGULAR_PLURALS.get(noun, noun + "s")


@dataclass(frozen=True)
class WorldSettings:
    """Sizes of a world; `PRESETS` names the two common ones."""

    images: int = 1000
    regions: int = 36
    feature_dim: int = 2048
    min_objects: int = 2
    max_objects: int = 6
    questions_per_image: int = 3
    captions_per_image: int = 5
    # The share of training images with captions in the pre-training caption data (COCO's role); the token and
    # phrase corpora and the retrieval captions cover every image whatever it is. The paper's premise is few
    # captions and cheap object labels and phrases: at 0.1 the sentence stage sees a tenth of the images.
    caption_fraction: float = 1.0
    detector_accuracy: float = 0.85
    feature_noise: float = 0.3
    seed: int = 0


PRESETS = {"small": WorldSettings(), "gpu": WorldSettings(images=50_000)}


@dataclass
class SceneObject:
    category: str
    colour: str
    size: str
    material: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in [0, 1]


@dataclass
class Scene:
    image_id: str
    height: int
    width: int
    objects: list[SceneObject] = field(default_factory=list)

    def count(self, category: str) -> int:
        return sum(item.category == category for item in self.objects)


def _relation(subject: SceneObject, other: SceneObject) -> str:
    """Where `subject` is relative to `other`, from the box centres."""
    dx = (subject.box[0] + subject.box[2] - other.box[0] - other.box[2]) / 2
    dy = (subject.box[1] + subject.box[3] - other.box[1] - other.box[3]) / 2
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def _box(rng: np.random.Generator, scale: tuple[float, float]) -> tuple[float, float, float, float]:
    width, height = rng.uniform(*scale, 2)
    x1, y1 = rng.uniform(0, 1 - width), rng.uniform(0, 1 - height)
    return (float(x1), float(y1), float(x1 + width), float(y1 + height))


def make_scenes(settings: WorldSettings, rng: np.random.Generator) -> list[Scene]:
    scenes = []
    for index in range(settings.images):
        scene = Scene(
            str(SYNTHETIC_IMAGE_IDS + index), int(rng.integers(300, 641)), int(rng.integers(300, 641))
        )
        for _ in range(int(rng.integers(settings.min_objects, settings.max_objects + 1))):
            scene.objects.append(
                SceneObject(
                    category=str(rng.choice(CATEGORIES)),
                    colour=str(rng.choice(COLOURS)),
                    size=str(rng.choice(SIZES)),
                    material=str(rng.choice(MATERIALS)),
                    box=_box(rng, (0.15, 0.5)),
                )
            )
        scenes.append(scene)
    return scenes


class Detector:
    """Scenes -> regions with noisy labels; regions -> features through fixed random projections."""

    def __init__(self, settings: WorldSettings, rng: np.random.Generator):
        self.settings = settings
        self.rng = rng
        dim = settings.feature_dim
        # Categories differ most, attributes less, position least: each is recoverable from the feature.
        self.class_vectors = rng.normal(0, 1, (len(OBJECT_CLASSES), dim))
        self.attribute_vectors = rng.normal(0, 0.6, (len(ATTRIBUTES), dim))
        self.box_projection = rng.normal(0, 0.5, (4, dim))

    def _label(self, true_id: int, candidates: int, high: tuple[float, float]) -> tuple[int, float]:
        """The detector's guess: right with `detector_accuracy` (confident), else another class (less so)."""
        if self.rng.random() < self.settings.detector_accuracy:
            return true_id, float(self.rng.uniform(*high))
        wrong = int(self.rng.integers(candidates - 1))
        return wrong + (wrong >= true_id), float(self.rng.uniform(0.2, 0.55))

    def _true_regions(self, scene: Scene) -> list[tuple[int, list[int], np.ndarray, tuple[float, float]]]:
        """(class, attribute ids with the colour first, box, confidence range) of every region."""
        regions = []
        for item in scene.objects:
            attributes = [ATTRIBUTES.index(name) for name in (item.colour, item.size, item.material)]
            box, category = np.array(item.box), OBJECT_CLASSES.index(item.category)
            regions.append((category, attributes, box, (0.6, 1.0)))
            if self.rng.random() < 0.5:  # a duplicate, shifted box of the same object
                shifted = np.sort(np.clip(box + self.rng.normal(0, 0.03, 4), 0, 1).reshape(2, 2), axis=0)
                regions.append((category, attributes, shifted.ravel(), (0.25, 0.5)))
            if item.category in PARTS:  # a part in the object's upper-left quarter, of the object's colour
                x1, y1, x2, y2 = item.box
                part = np.array([x1, y1, (x1 + x2) / 2, (y1 + y2) / 2])
                regions.append((OBJECT_CLASSES.index(PARTS[item.category]), attributes[:1], part, (0.3, 0.7)))
        while len(regions) < self.settings.regions:
            background = OBJECT_CLASSES.index(str(self.rng.choice(BACKGROUND)))
            colour = ATTRIBUTES.index(str(self.rng.choice(COLOURS)))
            regions.append((background, [colour], np.array(_box(self.rng, (0.2, 0.9))), (0.2, 0.5)))
        return regions[: self.settings.regions]

    def detect(self, scene: Scene) -> dict[str, np.ndarray]:
        """The detector's output for one scene, sorted by confidence; `true_classes` and `attribute_hot`
        (what each region really is) are what `features` projects."""
        detected = []
        for category, attributes, box, confidence in self._true_regions(scene):
            object_id, object_conf = self._label(category, len(OBJECT_CLASSES), confidence)
            colour_id, colour_conf = self._label(attributes[0], len(COLOURS), (0.5, 0.95))
            hot = np.zeros(len(ATTRIBUTES))
            hot[attributes] = 1.0
            detected.append((object_conf, object_id, colour_id, colour_conf, category, hot, box))
        detected.sort(key=lambda region: -region[0])  # a detector lists its boxes by confidence
        columns = [np.array(column) for column in zip(*detected, strict=True)]
        names = (
            "object_confidences",
            "object_ids",
            "attribute_ids",
            "attribute_confidences",
            "true_classes",
            "attribute_hot",
            "boxes",
        )
        return dict(zip(names, columns, strict=True))

    def features(self, regions: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """(k, R, F) float16 features of a block of images' regions (ReLU, like pooled CNN features)."""
        vectors = (
            self.class_vectors[regions["true_classes"]]
            + regions["attribute_hot"] @ self.attribute_vectors
            + regions["boxes"] @ self.box_projection
        )
        noise = rng.normal(0, self.settings.feature_noise, vectors.shape)
        return np.maximum(vectors + noise + 0.5, 0.0).astype(np.float16)


def _describe(item: SceneObject, rng: np.random.Generator) -> str:
    """An object with one or two of its attributes: "red car", "large wooden table"."""
    extra = [item.size, item.material][int(rng.integers(2))]
    return (
        f"{extra} {item.colour} {item.category}" if rng.random() < 0.4 else f"{item.colour} {item.category}"
    )


def groups(scene: Scene) -> list[str]:
    """The categories of which the scene holds more than one object, in the order they first appear."""
    return [
        category
        for category in dict.fromkeys(item.category for item in scene.objects)
        if scene.count(category) > 1
    ]


def count_phrase(scene: Scene, category: str) -> str:
    """ "two dogs": how many of a category the scene holds, with its plural."""
    return f"{NUMBER_WORDS[scene.count(category)]} {plural(category)}"


def region_phrases(scene: Scene, rng: np.random.Generator) -> list[str]:
    """Visual-Genome-like phrases: attribute phrases, spatial phrases, some with a verb, and the size of each
    group of objects of one category ("two dogs")."""
    phrases = [_describe(item, rng) for item in scene.objects]
    for subject, other in zip(scene.objects, scene.objects[1:], strict=False):
        phrases.append(f"{subject.category} {_relation(subject, other)} {other.category}")
        if rng.random() < 0.5:
            phrases.append(f"{subject.category} {rng.choice(VERBS)} a {other.category}")
    return phrases + [count_phrase(scene, category) for category in groups(scene)]


def captions(scene: Scene, count: int, rng: np.random.Generator) -> list[str]:
    """COCO-like captions naming two objects, their attributes and how they are placed; where the scene holds
    several objects of a category, half of them count that group instead ("two dogs and a red car."), as
    COCO's captions do, so that plurals and numbers are pre-training words too."""
    texts = []
    several = groups(scene)
    for _ in range(count):
        if several and rng.random() < 0.5:
            group = several[int(rng.integers(len(several)))]
            others = [item for item in scene.objects if item.category != group]
            other = f" and a {_describe(others[int(rng.integers(len(others)))], rng)}" if others else ""
            texts.append(f"{count_phrase(scene, group)}{other}.")
            continue
        first, second = (scene.objects[i] for i in rng.choice(len(scene.objects), 2, replace=False))
        texts.append(f"a {_describe(first, rng)} {_relation(first, second)} a {_describe(second, rng)}.")
    return texts


def _annotate(answer: str, alternatives: tuple[str, ...], rng: np.random.Generator) -> dict[str, float]:
    """Soft scores from ten simulated annotators, each right with probability 0.9."""
    given = [answer if rng.random() < 0.9 else str(rng.choice(alternatives)) for _ in range(ANNOTATORS)]
    return vqa_soft_scores(given)


def questions(scene: Scene, count: int, rng: np.random.Generator) -> list[dict]:
    """VQA-style questions of four types, each answerable only by looking at the regions."""
    records = []
    present = sorted({item.category for item in scene.objects})
    absent = [category for category in CATEGORIES if category not in present]
    unique = [item for item in scene.objects if scene.count(item.category) == 1]
    for number in range(count):
        kind = ("color", "count", "exist", "relation")[int(rng.integers(4))]
        if kind == "color" and unique:
            item = unique[int(rng.integers(len(unique)))]
            text, answer, alternatives = f"what color is the {item.category}?", item.colour, COLOURS
        elif kind == "count":
            category = str(rng.choice(present if rng.random() < 0.8 else absent))
            text, answer = f"how many {plural(category)} are there?", str(scene.count(category))
            alternatives = ("0", "1", "2", "3")
        elif kind == "relation" and len(unique) >= 2:
            first, second = (unique[i] for i in rng.choice(len(unique), 2, replace=False))
            text = f"what is {_relation(first, second)} the {second.category}?"
            answer, alternatives = first.category, tuple(CATEGORIES)
        else:
            kind = "exist"
            category = str(rng.choice(present if rng.random() < 0.5 else absent))
            text, answer, alternatives = (
                f"is there a {category}?",
                "yes" if category in present else "no",
                ("yes", "no"),
            )
        records.append(
            {
                "answer_type": "number" if kind == "count" else "yes/no" if kind == "exist" else "other",
                "img_id": scene.image_id,
                "label": _annotate(answer, alternatives, rng),
                "question_id": f"{scene.image_id}_{number}",
                "question_type": kind,
                "sent": text,
            }
        )
    return records


STATEMENT_KINDS = ("both", "exactly one", "more")


def statement_text(kind: str, category: str) -> str:
    if kind == "both":
        return f"both images contain a {category}."
    if kind == "exactly one":
        return f"exactly one image contains a {category}."
    return f"the left image has more {plural(category)} than the right image."


def statement_holds(kind: str, category: str, left: Scene, right: Scene) -> bool:
    in_left, in_right = left.count(category), right.count(category)
    if kind == "both":
        return in_left > 0 and in_right > 0
    if kind == "exactly one":
        return (in_left > 0) != (in_right > 0)
    return in_left > in_right


def nlvr2_pair(scenes: list[Scene], rng: np.random.Generator) -> tuple[Scene, Scene, str, int]:
    """An NLVR2-style (left, right, statement, label): the label (true or false, half each) and the kind of
    statement are drawn first, then two images and one of their objects for which the statement has that
    label. Each kind is then as often true as false, so the text alone tells nothing, as in real NLVR2
    (drawing the statement first made "exactly one image contains a _" true for 92% of them)."""
    label, kind = int(rng.integers(2)), STATEMENT_KINDS[int(rng.integers(len(STATEMENT_KINDS)))]
    # A random pair fits a (kind, label) at least about a third of the time ("exactly one" false needs an
    # object in both images), so a few draws suffice; the bound only guards a degenerate world.
    for _ in range(1000):
        left, right = (scenes[i] for i in rng.choice(len(scenes), 2, replace=False))
        shown = sorted({item.category for item in (*left.objects, *right.objects)})
        fitting = [category for category in shown if statement_holds(kind, category, left, right) == label]
        if fitting:
            category = fitting[int(rng.integers(len(fitting)))]
            return left, right, statement_text(kind, category), label
    raise RuntimeError(f"no pair of the {len(scenes)} images makes a {kind!r} statement {bool(label)}")


def captioned_images(train: list[str], settings: WorldSettings) -> set[str]:
    """The training images whose captions the pre-training caption data keeps: `caption_fraction` of them,
    drawn with a generator of their own so that the rest of the world does not change with the fraction."""
    if settings.caption_fraction >= 1:
        return set(train)
    keep = max(1, round(settings.caption_fraction * len(train)))
    rng = np.random.default_rng([settings.seed, 1])
    return {train[i] for i in rng.choice(len(train), size=keep, replace=False)}


def _split_of(index: int, images: int) -> str:
    fraction = index / images
    return "train" if fraction < 0.8 else "val" if fraction < 0.9 else "test"


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data))


def _regions(scene: Scene, phrases: list[str], first_id: int) -> dict:
    """A VG `region_descriptions.json` entry: the scene's phrases, each on one of its boxes, in pixels."""
    boxes = [item.box for item in scene.objects]
    regions = []
    for number, phrase in enumerate(phrases):
        x1, y1, x2, y2 = boxes[number % len(boxes)]
        regions.append(
            {
                "region_id": first_id + number,
                "image_id": int(scene.image_id),
                "phrase": phrase,
                "x": round(x1 * scene.width),
                "y": round(y1 * scene.height),
                "width": round((x2 - x1) * scene.width),
                "height": round((y2 - y1) * scene.height),
            }
        )
    return {"id": int(scene.image_id), "regions": regions}


def _karpathy_image(scene: Scene, image_number: int, split: str, texts: list[str]) -> dict:
    """A Karpathy `dataset_flickr30k.json` image with its captions."""
    return {
        "filename": f"{scene.image_id}.jpg",
        "imgid": image_number,
        "split": split,
        "sentids": [image_number * 10 + k for k in range(len(texts))],
        "sentences": [{"raw": text, "tokens": text.rstrip(".").split()} for text in texts],
    }


def _nlvr2_records(split: str, scenes: list[Scene], rng: np.random.Generator) -> list[dict]:
    """LXMERT's NLVR2 json of a split: one pair per image of the split."""
    records = []
    for number in range(len(scenes)):
        left, right, sentence, label = nlvr2_pair(scenes, rng)
        records.append(
            {
                "identifier": f"{split}-{number}-0",
                "img0": left.image_id,
                "img1": right.image_id,
                "label": label,
                "sent": sentence,
                "uid": f"synth-{split}-{number}",
            }
        )
    return records


def write_annotations(
    scenes: list[Scene], settings: WorldSettings, folder: Path, rng: np.random.Generator
) -> None:
    """Every annotation file, in its public format."""
    splits = {scene.image_id: _split_of(index, len(scenes)) for index, scene in enumerate(scenes)}
    captioned = captioned_images([image for image, split in splits.items() if split == "train"], settings)
    atomic_write_text(folder / "objects_vocab.txt", "\n".join(OBJECT_CLASSES) + "\n")
    atomic_write_text(folder / "attributes_vocab.txt", "\n".join(ATTRIBUTES) + "\n")

    region_descriptions, coco_images, coco_captions, karpathy = [], [], [], []
    vqa = {split: [] for split in ("train", "val", "test")}
    for scene in scenes:
        phrases = region_phrases(scene, rng)
        region_descriptions.append(_regions(scene, phrases, len(region_descriptions) * 100))
        texts = captions(scene, settings.captions_per_image, rng)
        image_number, split = len(coco_images), splits[scene.image_id]
        coco_images.append(
            {
                "id": image_number,
                "file_name": f"{scene.image_id}.jpg",
                "height": scene.height,
                "width": scene.width,
            }
        )
        coco_captions += [
            {"image_id": image_number, "id": image_number * 10 + k, "caption": text}
            for k, text in enumerate(texts)
            if scene.image_id in captioned
        ]
        karpathy.append(_karpathy_image(scene, image_number, split, texts))
        vqa[split] += questions(scene, settings.questions_per_image, rng)

    _write_json(folder / "region_descriptions.json", region_descriptions)
    _write_json(folder / "captions_train.json", {"images": coco_images, "annotations": coco_captions})
    _write_json(folder / "dataset_flickr30k.json", {"images": karpathy, "dataset": "synthetic"})
    for split, records in vqa.items():
        _write_json(folder / "vqa" / f"{split}.json", records)
        by_split = [scene for scene in scenes if splits[scene.image_id] == split]
        _write_json(folder / "nlvr2" / f"{split}.json", _nlvr2_records(split, by_split, rng))


def _all_texts(folder: Path) -> list[str]:
    """Every text of the world, for the tokenizer's vocabulary."""
    texts = [phrase.phrase for phrase in read_vg_region_descriptions(folder / "region_descriptions.json")]
    texts += [
        sentence
        for image in read_flickr30k_karpathy(folder / "dataset_flickr30k.json")
        for sentence in image.captions
    ]
    for split in ("train", "val", "test"):
        texts += [question.question for question in read_lxmert_qa_json(folder / "vqa" / f"{split}.json")]
        texts += [pair.sentence for pair in read_lxmert_nlvr2_json(folder / "nlvr2" / f"{split}.json")]
    return texts


def build_corpora(folder: Path) -> None:
    """Read the annotation files back through the real readers into the corpora training uses."""
    store = FeatureStore(folder / "store")
    train = {
        item.image_id
        for item in read_flickr30k_karpathy(folder / "dataset_flickr30k.json")
        if item.split == "train"
    }
    corpora = folder / "corpora"
    captions = caption_corpus(read_coco_captions(folder / "captions_train.json"), store)
    save_corpus(captions, corpora / "captions")
    # every training image: the caption images, as in the paper (§4.1), and with `caption_fraction` below 1
    # those without captions too, like the phrases (cheap labels where captions are scarce)
    tokens = token_corpus(store, read_class_vocab(folder / "objects_vocab.txt"), train)
    save_corpus(tokens, corpora / "tokens")
    phrases = [
        record
        for record in read_vg_region_descriptions(folder / "region_descriptions.json")
        if record.image_id in train
    ]
    save_corpus(phrase_corpus(phrases, store), corpora / "phrases")
    vqa = {split: read_lxmert_qa_json(folder / "vqa" / f"{split}.json") for split in ("train", "val", "test")}
    answers = build_answer_vocab(vqa["train"], min_count=1)
    for split in ("train", "val", "test"):
        save_corpus(qa_dataset(vqa[split], store, answers), corpora / f"vqa_{split}")
        save_corpus(
            nlvr2_dataset(read_lxmert_nlvr2_json(folder / "nlvr2" / f"{split}.json"), store),
            corpora / f"nlvr2_{split}",
        )
    save_corpus(
        flickr30k_dataset(read_flickr30k_karpathy(folder / "dataset_flickr30k.json"), store),
        corpora / "flickr30k",
    )


def world_lock_file(out: Path) -> Path:
    """The lock a world's generator holds (`folder_lock`): beside the world, which is replaced by a rename."""
    return out.parent / f".{out.name}.lock"


def generate_world(
    out: str | Path, settings: WorldSettings = WorldSettings(), *, overwrite: bool = False
) -> Path:
    """Write a complete world to `out`, or reuse the one there if it was made with the same settings; one made
    with other settings is refused, naming them, unless `overwrite` replaces it.

    The world, its tokenizer included, is a pure function of `settings`: two builds are identical file for
    file, so the same curriculum on a fresh output folder trains the same model.

    The world is assembled in a temporary sibling folder and renamed into place, with `world.json` (the
    settings) written last: a killed run leaves no half world behind, and a re-run starts over. One process at
    a time generates a world: another is refused naming it (`world_lock_file`).
    """
    out = Path(out)
    if settings.images < 20:
        raise ValueError(
            f"images: a world needs at least 20 images (2 per val/test split), got {settings.images}"
        )
    if not 0 < settings.caption_fraction <= 1:
        raise ValueError(
            f"caption_fraction: the share of training images with captions, in (0, 1], got "
            f"{settings.caption_fraction}"
        )
    with folder_lock(world_lock_file(out), f"the synthetic world {out}", "wait for its generation to end"):
        marker = out / "world.json"
        stamp = {"format": WORLD_FORMAT, **asdict(settings)}
        if marker.is_file():
            made = json.loads(marker.read_text())
            if made == stamp:
                return out
            if not overwrite:
                changes = ", ".join(
                    f"{key}: {made.get(key)!r} -> {value!r}"
                    for key, value in stamp.items()
                    if made.get(key) != value
                )
                raise FileExistsError(
                    f"{out} holds a world made with other settings or by an older version of the generator "
                    f"({changes}). Replace it with "
                    "overwrite=True: `python -m lxmert_s_msp.data.synthetic --overwrite`, or "
                    "`recipes/pretrain.py --overwrite_output_dir` for the world of an output folder (which "
                    "also trains the stages again on the new world)"
                )
        _write_world(out, settings)
    return out


def _write_world(out: Path, settings: WorldSettings) -> None:
    """Build the world in `<out>.partial`, then rename it to `out`."""
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = np.random.default_rng(settings.seed)
    scenes = make_scenes(settings, rng)
    detector = Detector(settings, rng)
    detected = [detector.detect(scene) for scene in scenes]
    regions = {name: np.stack([image[name] for image in detected]) for name in detected[0]}
    noise = np.random.default_rng([settings.seed, 1])
    chunk = 256  # features stream into the store a block at a time: the GPU preset's do not fit in memory
    write_store_from_chunks(
        work / "store",
        [scene.image_id for scene in scenes],
        (
            detector.features({name: array[start : start + chunk] for name, array in regions.items()}, noise)
            for start in range(0, len(scenes), chunk)
        ),
        settings.regions,
        settings.feature_dim,
        boxes=regions["boxes"],
        object_ids=regions["object_ids"],
        object_confidences=regions["object_confidences"],
        attribute_ids=regions["attribute_ids"],
        attribute_confidences=regions["attribute_confidences"],
        num_boxes=np.full(len(scenes), settings.regions),
        image_sizes=np.array([(scene.height, scene.width) for scene in scenes]),
    )
    build_hard_negatives(FeatureStore(work / "store"), top_m=min(100, settings.images - 1))
    write_annotations(scenes, settings, work, rng)
    _write_json(work / "scenes.json", [asdict(scene) for scene in scenes])
    build_corpora(work)
    tokenizer = build_wordpiece_tokenizer([*_all_texts(work), *OBJECT_CLASSES, *ATTRIBUTES], vocab_size=2000)
    tokenizer.save_pretrained(work / "tokenizer")
    atomic_write_text(work / "world.json", json.dumps({"format": WORLD_FORMAT, **asdict(settings)}, indent=2))
    replace_folder(work, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="folder of the world")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--images", type=int, help="override the preset's number of images")
    parser.add_argument(
        "--feature-dim", type=int, help="override the feature size (2,048 like a real detector)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--caption-fraction", type=float, help="the share of training images with captions (default 1)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a world made with other settings (the same: reused)"
    )
    args = accept_underscores(parser).parse_args(argv)
    overrides = {
        "images": args.images,
        "feature_dim": args.feature_dim,
        "seed": args.seed,
        "caption_fraction": args.caption_fraction,
    }
    settings = replace(
        PRESETS[args.preset], **{key: value for key, value in overrides.items() if value is not None}
    )
    generate_world(args.out, settings, overwrite=args.overwrite)
    print(f"synthetic world ({settings.images} images, seed {settings.seed}) in {args.out}")


if __name__ == "__main__":
    run(main)
