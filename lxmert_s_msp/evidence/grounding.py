"""Checks of a pre-trained checkpoint (no fine-tuning) for when downstream scores sit at the prior.

Does a word look at the object it names? `named_region_attention`: the cross-attention a caption word that
names a detector class pays to the regions the detector labelled with that class, against what uniform
attention would give them. ITM, retrieval and VQA need a word to find its region; a model whose text-to-region
attention stays uniform sees the image only as the mean of its regions.

Does the pooled output still depend on the input? `pooled_output_spread`: every head (ITM, topic, QA, NLVR2,
retrieval) reads it, so a pooler saturated into the same vector for every input leaves them nothing to learn.

Does the text know where the objects are? `relation_word_probe`: MLM asked for the masked spatial relation
word of each held-out caption ("a red car [MASK] of a blue dog"), among the relation words, with the caption's
own image and with another one. Only the boxes tell "left" from "right", so a model that grounds relations is
right more often with its own image; one that guesses from the words scores the same with both.
`relation_subject_probe`: MLM asked for a relation's hidden subject, the question VQA asks with "what is left
of the cup?", with the relation word as written and with its opposite. `relation_pointing_probe`: the same
question asked of the relation readout (`alignment_relations`), its weight on the subject's regions, and on
every confident region on the relation's side of its object (RPT's two kinds of targets).

    python -m lxmert_s_msp.evidence.grounding outputs/pretrain/hub --data-dir outputs/pretrain/world
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset

from lxmert_s_msp.checkpoints import load_model
from lxmert_s_msp.cli import accept_underscores, run
from lxmert_s_msp.data.collators import (
    class_word_ids,
    class_wordpieces,
    opposite_ids,
    read_regions,
    relation_sides,
    text_inputs,
    visual_inputs,
)
from lxmert_s_msp.data.downstream_data import retrieval_split
from lxmert_s_msp.data.readers import read_class_vocab
from lxmert_s_msp.data.store import FeatureStore
from modeling_lxmert_s import LxmertSForPreTraining
from modeling_lxmert_s.pretraining_pieces import (
    SPATIAL_OPPOSITES,
    PieceSettings,
    PretrainingBatch,
    relation_pointing_piece,
    relation_subjects,
)
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor

# The detection confidence the side pointing probe counts a region from: a usual detector threshold, that of
# `recipes/configs/grounding/relation_sides.yaml`.
SIDE_CONFIDENCE = 0.5


@dataclass(frozen=True)
class NamedRegionAttention:
    """Per cross-modality layer, the mean (over heads and measured words) attention weight on the named
    class's regions, and the share uniform attention would give them; `words` measured."""

    weights: list[float]
    uniform_share: float
    words: int

    @property
    def ratios(self) -> list[float]:
        """Each layer's weight over the uniform share: 1 is blind, higher is looking at the object."""
        return [weight / self.uniform_share for weight in self.weights]


def caption_inputs(
    processor: LxmertSProcessor, store: FeatureStore, data_folder: Path, split: str, images: int
) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Model inputs of the first caption of each of the first `images` images of a Flickr30k-style split
    (all, if it has fewer), each with its own image; and those images' store rows."""
    rows = retrieval_split(data_folder, split)
    rows = rows.select(range(min(images, len(rows))))
    image_rows = np.asarray(rows["image_index"], dtype=np.int64)
    inputs = text_inputs(processor, [captions[0] for captions in rows["captions"]])
    inputs |= visual_inputs(store, image_rows, processor.num_regions)
    return inputs, image_rows


def _class_of_token(processor: LxmertSProcessor, data_folder: Path) -> dict[int, int]:
    """The detector class (a line of `objects_vocab.txt`) each one-piece class name's token names."""
    class_of_token = {}
    for index, name in enumerate(read_class_vocab(data_folder / "objects_vocab.txt")):
        pieces = processor.tokenizer.tokenize(name)
        if len(pieces) == 1:
            class_of_token[processor.tokenizer.convert_tokens_to_ids(pieces[0])] = index
    return class_of_token


@torch.no_grad()
def named_region_attention(
    model_folder: str | Path, data_folder: str | Path, split: str = "test", images: int = 100
) -> NamedRegionAttention:
    """Measured on `caption_inputs`, over every word that is a one-piece class name of `objects_vocab.txt`
    and that the detector found in the image."""
    data_folder = Path(data_folder)
    model = load_model(LxmertSForPreTraining, model_folder, attn_implementation="eager").eval()
    processor = LxmertSProcessor.from_pretrained(model_folder)
    store = FeatureStore(data_folder / "store")
    class_of_token = _class_of_token(processor, data_folder)
    inputs, image_rows = caption_inputs(processor, store, data_folder, split, images)
    attentions = model.lxmert(**inputs, output_attentions=True).cross_encoder_attentions
    valid = inputs["visual_attention_mask"].bool().numpy()
    labels = np.where(valid, np.asarray(store.object_ids[image_rows]), -1)
    offset = attentions[0].shape[-1] - labels.shape[1]  # the visual [CLS], when the model has one
    named, shares = [], []
    for caption, token_ids in enumerate(inputs["input_ids"].tolist()):
        for position, token in enumerate(token_ids):
            regions = labels[caption] == class_of_token.get(token, -2)
            if regions.any():
                named.append((caption, position, torch.from_numpy(regions)))
                shares.append(regions.sum() / (valid[caption].sum() + offset))
    if not named:
        raise ValueError(
            f"{data_folder}: no caption word of split {split!r} names a class the detector found in its image"
        )
    weights = [
        float(
            np.mean(
                [
                    layer[caption, :, position, offset:][:, regions].sum(-1).mean().item()
                    for caption, position, regions in named
                ]
            )
        )
        for layer in attentions
    ]
    return NamedRegionAttention(weights, float(np.mean(shares)), len(named))


@dataclass(frozen=True)
class PooledSpread:
    """`spread`: the pooled output's standard deviation over inputs relative to its mean magnitude (0: one
    vector for every input); `saturated`: the fraction of its units beyond |0.99| (tanh saturation)."""

    spread: float
    saturated: float


@torch.no_grad()
def pooled_output_spread(
    model_folder: str | Path, data_folder: str | Path, split: str = "test", images: int = 100
) -> PooledSpread:
    """Measured on `caption_inputs`."""
    data_folder = Path(data_folder)
    model = load_model(LxmertSForPreTraining, model_folder).eval()
    processor = LxmertSProcessor.from_pretrained(model_folder)
    inputs, _ = caption_inputs(processor, FeatureStore(data_folder / "store"), data_folder, split, images)
    pooled = model.lxmert(**inputs).pooled_output.float()
    spread = (pooled.std(0).mean() / pooled.abs().mean().clamp(min=1e-12)).item()
    return PooledSpread(spread=spread, saturated=(pooled.abs() > 0.99).float().mean().item())


@dataclass(frozen=True)
class RelationProbe:
    """MLM's accuracy (%) at the masked relation word among `words`, with each caption's own image and with
    another image of the split; `most_frequent`, the share of the commonest answer; `captions` measured."""

    own_image: float
    other_image: float
    most_frequent: float
    words: list[str]
    captions: int

    @property
    def chance(self) -> float:
        return 100 / len(self.words)


def _mlm_checkpoint(model_folder: str | Path) -> tuple[LxmertSForPreTraining, LxmertSProcessor]:
    model = load_model(LxmertSForPreTraining, model_folder).eval()
    if "mlm" not in model.heads:
        raise ValueError(f"{model_folder}: the checkpoint has no MLM head to ask for the masked word")
    return model, LxmertSProcessor.from_pretrained(model_folder)


def _split_captions(data_folder: Path, split: str, images: int) -> tuple[Dataset, list[str], list[int]]:
    """The split's first `images` images (all, if it has fewer), every caption of theirs, and the image (a
    position in those rows) of each caption."""
    rows = retrieval_split(data_folder, split)
    rows = rows.select(range(min(images, len(rows))))
    captions, image_of = [], []
    for image, image_captions in enumerate(rows["captions"]):
        captions += image_captions
        image_of += [image] * len(image_captions)
    return rows, captions, image_of


@torch.no_grad()
def relation_word_probe(
    model_folder: str | Path, data_folder: str | Path, split: str = "test", images: int = 100
) -> RelationProbe:
    """Measured on every caption of the split's first `images` images that holds a spatial relation word of
    one word piece (its first one is masked); the other image is the next image of the split."""
    data_folder = Path(data_folder)
    model, processor = _mlm_checkpoint(model_folder)
    tokenizer = processor.tokenizer
    pieces = {word: tokenizer.tokenize(word) for word in SPATIAL_OPPOSITES}
    words = [word for word, found in pieces.items() if len(found) == 1 and found[0] != tokenizer.unk_token]
    word_ids = torch.tensor(tokenizer.convert_tokens_to_ids(words))
    rows, captions, image_of = _split_captions(data_folder, split, images)
    inputs = text_inputs(processor, captions)
    input_ids = inputs["input_ids"]
    relation = torch.isin(input_ids, word_ids)
    kept = relation.any(1)
    if not kept.any() or len(rows) < 2:
        raise ValueError(
            f"{data_folder}: split {split!r} needs two images and a caption with one of {words} to probe"
        )
    inputs = {name: value[kept] for name, value in inputs.items()}
    position = relation[kept].int().argmax(1)
    measured = torch.arange(len(position))
    truth = inputs["input_ids"][measured, position].clone()
    inputs["input_ids"][measured, position] = tokenizer.mask_token_id
    own = torch.tensor(image_of)[kept]
    image_rows = np.asarray(rows["image_index"], dtype=np.int64)
    accuracy = {}
    for name, images_fed in (("own", own), ("other", (own + 1) % len(rows))):
        visual = visual_inputs(
            FeatureStore(data_folder / "store"), image_rows[images_fed.numpy()], processor.num_regions
        )
        hidden = model.lxmert(**inputs, **visual).language_output[measured, position]
        chosen = word_ids[model.heads.mlm.logits(hidden)[:, word_ids].argmax(1)]
        accuracy[name] = 100 * (chosen == truth).float().mean().item()
    most_frequent = 100 * max((truth == word_id).float().mean().item() for word_id in word_ids)
    return RelationProbe(accuracy["own"], accuracy["other"], most_frequent, words, len(truth))


@dataclass(frozen=True)
class SubjectProbe:
    """MLM's accuracy (%) at a relation's hidden subject noun among the `candidates` object words, with the
    caption's own image and relation word, and with the relation word replaced by its opposite; `captions`
    measured."""

    relation: float
    opposite: float
    candidates: int
    captions: int

    @property
    def chance(self) -> float:
        return 100 / self.candidates


@torch.no_grad()
def relation_subject_probe(
    model_folder: str | Path, data_folder: str | Path, split: str = "test", images: int = 100
) -> SubjectProbe:
    """Measured on every caption of the split's first `images` images whose first spatial relation word has a
    subject (`relation_subjects`: the object and attribute words right before it) ending in an object word:
    the subject is masked whole, as relation-subject MLM hides it, and MLM asked for its noun among the
    object words. "A [MASK] [MASK] left of a blue cup" asks what VQA's "what is left of the cup?" asks; with
    "right" in place of "left" the answer is another object, so a model that reads the boxes is right less
    often with the opposite word, and one that guesses from the words and the image's objects alike."""
    data_folder = Path(data_folder)
    model, processor = _mlm_checkpoint(model_folder)
    tokenizer = processor.tokenizer
    objects = read_class_vocab(data_folder / "objects_vocab.txt")
    object_words = class_word_ids(objects, tokenizer)
    concepts = class_word_ids([*objects, *read_class_vocab(data_folder / "attributes_vocab.txt")], tokenizer)
    opposite_of = opposite_ids(SPATIAL_OPPOSITES, tokenizer)
    relation_ids = torch.nonzero(opposite_of >= 0).squeeze(1)
    rows, captions, image_of = _split_captions(data_folder, split, images)
    inputs = text_inputs(processor, captions)
    input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
    first_relation = torch.isin(input_ids, relation_ids) & attention_mask.bool()
    first_relation &= torch.cumsum(first_relation.int(), 1) == 1
    subject, _ = relation_subjects(
        input_ids, attention_mask, relation_ids, concepts, torch.Generator().manual_seed(0), 1.0
    )
    relation_at = first_relation.int().argmax(1)
    noun_at = (relation_at - 1).clamp(min=0)
    measured = torch.arange(len(captions))
    kept = (
        first_relation.any(1)
        & subject[measured, noun_at]
        & torch.isin(input_ids[measured, noun_at], object_words)
    )
    if not kept.any():
        raise ValueError(
            f"{data_folder}: no caption of split {split!r} names an object right before a relation word"
        )
    inputs = {name: value[kept] for name, value in inputs.items()}
    subject, relation_at, noun_at = subject[kept], relation_at[kept], noun_at[kept]
    measured = torch.arange(len(noun_at))
    truth = inputs["input_ids"][measured, noun_at].clone()
    inputs["input_ids"] = torch.where(subject, tokenizer.mask_token_id, inputs["input_ids"])
    image_rows = np.asarray(rows["image_index"], dtype=np.int64)[np.asarray(image_of)[kept.numpy()]]
    visual = visual_inputs(FeatureStore(data_folder / "store"), image_rows, processor.num_regions)
    flipped = inputs["input_ids"].clone()
    flipped[measured, relation_at] = opposite_of[flipped[measured, relation_at]]
    accuracy = []
    for input_ids in (inputs["input_ids"], flipped):
        hidden = model.lxmert(**(inputs | {"input_ids": input_ids}), **visual).language_output[
            measured, noun_at
        ]
        chosen = object_words[model.heads.mlm.logits(hidden)[:, object_words].argmax(1)]
        accuracy.append(100 * (chosen == truth).float().mean().item())
    return SubjectProbe(accuracy[0], accuracy[1], len(object_words), len(truth))


@dataclass(frozen=True)
class PointingProbe:
    """The relation readout's mean weight (%) on RPT's targets (the regions a relation's subject names, or
    those on the relation's side of its object), with the relation word as written and with its opposite,
    over `captions`; `chance`, the targets' share of the regions."""

    relation: float
    opposite: float
    chance: float
    captions: int


@torch.no_grad()
def relation_pointing_probe(
    model_folder: str | Path,
    data_folder: str | Path,
    split: str = "test",
    images: int = 100,
    side_confidence: float | None = None,
) -> PointingProbe | None:
    """Measured on every caption of the split's first `images` images that RPT would train on (one spatial
    relation word, a subject that names regions: `relation_pointing_piece`), asked as RPT asks it, the
    subject hidden ("a [MASK] [MASK] left of a blue cup"); None for a model without the relation readout.
    With the opposite word the subject is the wrong answer, so a readout that compares places puts less
    weight on it; one that picks the image's objects regardless puts as much. With `side_confidence` the
    targets are RPT's side targets (every region detected with that confidence on the relation's side of its
    object), which the opposite word makes the wrong side: how much of the pick the direction moves."""
    data_folder = Path(data_folder)
    model = load_model(LxmertSForPreTraining, model_folder).eval()
    if not model.config.alignment_relations:
        return None
    processor = LxmertSProcessor.from_pretrained(model_folder)
    tokenizer = processor.tokenizer
    objects = read_class_vocab(data_folder / "objects_vocab.txt")
    opposite_of = opposite_ids(SPATIAL_OPPOSITES, tokenizer)
    settings = PieceSettings(
        mask_token_id=tokenizer.mask_token_id,
        vocab_size=len(tokenizer),
        special_ids=torch.tensor(sorted(tokenizer.all_special_ids)),
        relation_word_ids=torch.nonzero(opposite_of >= 0).squeeze(1),
        class_wordpieces=class_wordpieces(objects, tokenizer),
        class_word_ids=class_word_ids(
            [*objects, *read_class_vocab(data_folder / "attributes_vocab.txt")], tokenizer
        ),
        relation_sides=None if side_confidence is None else relation_sides(tokenizer, side_confidence),
    )
    rows, captions, image_of = _split_captions(data_folder, split, images)
    inputs = text_inputs(processor, captions)
    image_rows = np.asarray(rows["image_index"], dtype=np.int64)[np.asarray(image_of)]
    regions = read_regions(FeatureStore(data_folder / "store"), image_rows, processor.num_regions)
    batch = PretrainingBatch(
        inputs=dict(inputs),
        image_index=torch.arange(len(captions)),
        generator=torch.Generator().manual_seed(0),
        settings=settings,
        read_regions=lambda fed: {name: value[fed] for name, value in regions.items()},
        describe_region=lambda row, region: f"{data_folder}: caption {row}, region {region}",
    )
    relation_pointing_piece(batch)
    targets = batch.labels["relation_targets"]
    kept = targets.any(1)
    if not kept.any():
        raise ValueError(
            f"{data_folder}: no caption of split {split!r} has one relation word with a named subject"
        )
    inputs = {name: value[kept] for name, value in inputs.items()}
    inputs["input_ids"], targets = batch.labels["relation_input_ids"][kept], targets[kept]
    visual = {
        "visual_feats": regions["features"][kept],
        "visual_pos": regions["boxes"].float()[kept],
        "visual_attention_mask": regions["visual_attention_mask"][kept].long(),
    }
    relation = torch.isin(inputs["input_ids"], settings.relation_word_ids)
    flipped = torch.where(relation, opposite_of[inputs["input_ids"]], inputs["input_ids"])
    shares = []
    for input_ids in (inputs["input_ids"], flipped):
        weights = model.lxmert(**(inputs | {"input_ids": input_ids}), **visual).relation_weights
        shares.append(100 * (weights * targets).sum(1).mean().item())
    chance = 100 * (targets.sum(1) / visual["visual_attention_mask"].sum(1)).mean().item()
    return PointingProbe(shares[0], shares[1], chance, len(targets))


@dataclass(frozen=True)
class PositionProbe:
    """Per layer (the embeddings first), the held-out R^2 of a linear fit of a box's centre x from the states:
    of each region's own box from its state (`regions`), and of the box of the one region of the class a
    word names from the word's state (`words`, over `named` words)."""

    regions: list[float]
    words: list[float]
    named: int


def held_out_r2(features: np.ndarray, targets: np.ndarray, train: np.ndarray, ridge: float = 1e-2) -> float:
    """R^2 on the rows outside `train` of a ridge regression (features standardised on the training rows,
    penalty `ridge` per training row, intercept free) fit on the rows in it: 1 is a perfect linear
    read-out, 0 the held-out mean's, below 0 worse than it."""
    features = features.astype(np.float64)
    mean, scale = features[train].mean(0), features[train].std(0) + 1e-6
    design = np.c_[(features - mean) / scale, np.ones(len(features))]
    penalty = ridge * train.sum() * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0
    weights = np.linalg.solve(design[train].T @ design[train] + penalty, design[train].T @ targets[train])
    residual = targets[~train] - design[~train] @ weights
    return float(1 - (residual**2).mean() / targets[~train].var())


@torch.no_grad()
def position_probe(
    model_folder: str | Path, data_folder: str | Path, split: str = "test", images: int = 100
) -> PositionProbe:
    """Measured on every caption of the split's first `images` images with its own image; fit on the
    captions of the first half of the images, scored on the rest. A word counts when the detector labelled
    exactly one region of its image with the class it names."""
    data_folder = Path(data_folder)
    model = load_model(LxmertSForPreTraining, model_folder).eval()
    processor = LxmertSProcessor.from_pretrained(model_folder)
    store = FeatureStore(data_folder / "store")
    rows, captions, image_of = _split_captions(data_folder, split, images)
    image_rows = np.asarray(rows["image_index"], dtype=np.int64)[np.asarray(image_of)]
    inputs = text_inputs(processor, captions) | visual_inputs(store, image_rows, processor.num_regions)
    encoded = model.lxmert(**inputs, output_hidden_states=True)
    boxes = inputs["visual_pos"][..., :4].numpy()
    centre = (boxes[..., 0] + boxes[..., 2]) / 2
    valid = inputs["visual_attention_mask"].bool().numpy()
    train = np.asarray(image_of) < len(rows) // 2
    offset = encoded.vision_hidden_states[0].shape[1] - centre.shape[1]  # the visual [CLS]
    region_train = np.repeat(train, valid.sum(1))
    regions = [
        held_out_r2(states[:, offset:].float().numpy()[valid], centre[valid], region_train)
        for states in encoded.vision_hidden_states
    ]
    class_of_token = _class_of_token(processor, data_folder)
    labels = np.where(valid, np.asarray(store.object_ids[image_rows]), -1)
    named = [
        (caption, position, centre[caption][labels[caption] == class_of_token[token]][0])
        for caption, token_ids in enumerate(inputs["input_ids"].tolist())
        for position, token in enumerate(token_ids)
        if token in class_of_token and (labels[caption] == class_of_token[token]).sum() == 1
    ]
    if not named or train[[caption for caption, _, _ in named]].all():
        raise ValueError(
            f"{data_folder}: too few caption words of split {split!r} name a class found once in their image"
        )
    caption, position, target = (np.asarray(column) for column in zip(*named, strict=True))
    words = [
        held_out_r2(states.float().numpy()[caption, position], target, train[caption])
        for states in encoded.language_hidden_states
    ]
    return PositionProbe(regions, words, len(named))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="a pre-training checkpoint folder (model + processor)")
    parser.add_argument(
        "--data-dir", required=True, help="its data folder (store/, objects_vocab.txt, corpora/)"
    )
    parser.add_argument("--split", default="test")
    parser.add_argument("--images", type=int, default=100)
    args = accept_underscores(parser).parse_args(argv)
    looks = named_region_attention(args.model, args.data_dir, args.split, args.images)
    ratios = ", ".join(f"{ratio:.2f}" for ratio in looks.ratios)
    print(f"attention on the named object's regions, x uniform, per layer: {ratios} ({looks.words} words)")
    pooled = pooled_output_spread(args.model, args.data_dir, args.split, args.images)
    print(f"pooled output: spread over inputs {pooled.spread:.3f}, saturated units {pooled.saturated:.1%}")
    probe = relation_word_probe(args.model, args.data_dir, args.split, args.images)
    print(
        f"masked relation word, MLM among {len(probe.words)} words ({probe.captions} captions): own image "
        f"{probe.own_image:.1f}%, another image {probe.other_image:.1f}% (chance {probe.chance:.1f}%, "
        f"commonest word {probe.most_frequent:.1f}%)"
    )
    places = position_probe(args.model, args.data_dir, args.split, args.images)
    print(
        "box centre x read linearly from the states, held-out R^2 per layer (embeddings first): regions "
        + ", ".join(f"{value:.2f}" for value in places.regions)
        + "; words naming a region "
        + ", ".join(f"{value:.2f}" for value in places.words)
        + f" ({places.named} words)"
    )
    subjects = relation_subject_probe(args.model, args.data_dir, args.split, args.images)
    print(
        f"masked subject of a relation, MLM among {subjects.candidates} object words ({subjects.captions} "
        f"captions), own image: with its relation word {subjects.relation:.1f}%, with the opposite word "
        f"{subjects.opposite:.1f}% (chance {subjects.chance:.1f}%)"
    )
    pointing = relation_pointing_probe(args.model, args.data_dir, args.split, args.images)
    if pointing is not None:
        print(
            f"relation readout's weight on the subject's regions ({pointing.captions} captions): with its "
            f"relation word {pointing.relation:.1f}%, with the opposite word {pointing.opposite:.1f}% "
            f"(chance {pointing.chance:.1f}%)"
        )
        sides = relation_pointing_probe(args.model, args.data_dir, args.split, args.images, SIDE_CONFIDENCE)
        print(
            f"relation readout's weight on the regions on the relation's side of its object, detected with "
            f"confidence >= {SIDE_CONFIDENCE} ({sides.captions} captions): with its relation word "
            f"{sides.relation:.1f}%, with the opposite word (now the wrong side) {sides.opposite:.1f}% "
            f"(chance {sides.chance:.1f}%)"
        )


if __name__ == "__main__":
    run(main)
