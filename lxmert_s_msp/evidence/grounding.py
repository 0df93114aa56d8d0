"""Three checks of a pre-trained checkpoint (no fine-tuning) for when downstream scores sit at the prior.

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

    python -m lxmert_s_msp.evidence.grounding outputs/pretrain/hub --data-dir outputs/pretrain/world
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lxmert_s_msp.checkpoints import load_model
from lxmert_s_msp.cli import accept_underscores, run
from lxmert_s_msp.data.collators import text_inputs, visual_inputs
from lxmert_s_msp.data.downstream_data import retrieval_split
from lxmert_s_msp.data.readers import read_class_vocab
from lxmert_s_msp.data.store import FeatureStore
from modeling_lxmert_s import LxmertSForPreTraining
from modeling_lxmert_s.pretraining_pieces import SPATIAL_OPPOSITES
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor


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
    class_of_token = {}
    for index, name in enumerate(read_class_vocab(data_folder / "objects_vocab.txt")):
        pieces = processor.tokenizer.tokenize(name)
        if len(pieces) == 1:
            class_of_token[processor.tokenizer.convert_tokens_to_ids(pieces[0])] = index
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


@torch.no_grad()
def relation_word_probe(
    model_folder: str | Path, data_folder: str | Path, split: str = "test", images: int = 100
) -> RelationProbe:
    """Measured on every caption of the split's first `images` images that holds a spatial relation word of
    one word piece (its first one is masked); the other image is the next image of the split."""
    data_folder = Path(data_folder)
    model = load_model(LxmertSForPreTraining, model_folder).eval()
    if "mlm" not in model.heads:
        raise ValueError(f"{model_folder}: the checkpoint has no MLM head to ask for the masked word")
    processor = LxmertSProcessor.from_pretrained(model_folder)
    tokenizer = processor.tokenizer
    pieces = {word: tokenizer.tokenize(word) for word in SPATIAL_OPPOSITES}
    words = [word for word, found in pieces.items() if len(found) == 1 and found[0] != tokenizer.unk_token]
    word_ids = torch.tensor(tokenizer.convert_tokens_to_ids(words))
    rows = retrieval_split(data_folder, split)
    rows = rows.select(range(min(images, len(rows))))
    captions, image_of = [], []
    for image, image_captions in enumerate(rows["captions"]):
        captions += image_captions
        image_of += [image] * len(image_captions)
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


if __name__ == "__main__":
    run(main)
