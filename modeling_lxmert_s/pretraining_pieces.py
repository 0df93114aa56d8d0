"""The collator piece of each MSP pre-training task: what it adds to a batch (inputs it corrupts, labels).

A piece is a function of one `PretrainingBatch`; `PRETRAINING_TASKS` (modeling_lxmert_s.py) pairs it with the
task's head, and `lxmert_s_msp.data.collators.MSPCollator` runs the pieces of a stage's tasks in the
registry's order. The tensor functions below do the work on whole (B, L) / (B, R) tensors, with no loop over
tokens or regions, and draw every random number from the batch's `torch.Generator` in a fixed order, so one
seed reproduces a batch. The region pieces change a copy of the (B, R, F) features in place, as only a few
rows change and a second copy costs more than the rest of the collator.

This module ships with the model's code (a saved folder's `pretraining_pieces.py`): it needs only torch and
numpy, so a pre-training checkpoint carries the definition of the labels its heads were trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .input_checks import IGNORE_INDEX

# The five orderings of a triplet other than the identity; IFRS draws uniformly among them.
NON_IDENTITY_PERMUTATIONS = torch.tensor([[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_ids: torch.Tensor,
    generator: torch.Generator,
    probability: float = 0.15,
    preferred: Sequence[tuple[torch.Tensor, float]] = (),
    always: torch.Tensor | None = None,
    never: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MLM (BERT/LXMERT): choose each text token with `probability`; of the chosen 80% become [MASK], 10% a
    random vocabulary id, 10% stay. Returns the new ids and `mlm_labels` (original id where chosen, -100
    elsewhere). Padding and `special_ids` are never chosen: the collator passes all the tokenizer's special
    tokens ([CLS], [SEP], [PAD], and [UNK], a useless target), as Hugging Face's MLM collator does.

    Tokens whose id is in one of the `preferred` (ids, probability) pairs are chosen with that probability
    instead (a later pair wins): the phrase stage's MLM "masks the attribute or category information" (§3.2),
    so it prefers the class-name words of `class_word_ids`; a stage may prefer the spatial relation words
    (`relation_word_ids`) too, which only the regions' boxes tell. (B, L) masks `always` and `never` overrule
    the rates: a relation's subject is hidden whole and its relation word and object kept
    (`relation_subjects`).
    """
    eligible = attention_mask.bool() & ~torch.isin(input_ids, special_ids)
    rate = torch.full(input_ids.shape, probability)
    for ids, preferred_probability in preferred:
        rate = torch.where(torch.isin(input_ids, ids), preferred_probability, rate)
    if always is not None:
        rate = torch.where(always, 1.0, rate)
    if never is not None:
        rate = torch.where(never, 0.0, rate)
    chosen = (torch.rand(input_ids.shape, generator=generator) < rate) & eligible
    action = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    masked = torch.where(chosen & (action < 0.8), mask_token_id, input_ids)
    masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, masked)
    return masked, torch.where(chosen, input_ids, IGNORE_INDEX)


def relation_subjects(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    relation_ids: torch.Tensor,
    concept_ids: torch.Tensor,
    generator: torch.Generator,
    probability: float,
    longest: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relation-subject MLM: draw each spatial relation word (`relation_ids`) with `probability`; the words
    naming its subject, the run of up to `longest` concept words (`concept_ids`: object and attribute names)
    right before it ("a [red car] left of a blue cup"), are to be masked whole, and the relation word and the
    words after it up to the next relation word kept. What is hidden is then the answer to a VQA relation
    question ("what is left of the cup?"): the boxes tell which object it is; the attribute words go too, as
    "red" would name it without the relation. Returns (B, L) masks (`always`, `never`) for `mask_tokens`;
    a drawn relation word with no concept word before it hides nothing."""
    real = attention_mask.bool()
    relation = torch.isin(input_ids, relation_ids) & real
    drawn = relation & (torch.rand(input_ids.shape, generator=generator) < probability)
    concept = torch.isin(input_ids, concept_ids) & real

    def ahead(mask: torch.Tensor, steps: int) -> torch.Tensor:
        """(B, L): mask[:, j + steps] at j, False past the end."""
        return torch.nn.functional.pad(mask[:, steps:], (0, steps), value=False)

    subject = torch.zeros_like(real)
    run = real.clone()  # positions j .. j + k - 1 are all concept words
    for steps in range(1, longest + 1):
        run = run & ahead(concept, steps - 1)
        subject |= run & ahead(drawn, steps)
    answered = drawn & torch.nn.functional.pad(subject[:, :-1], (1, 0), value=False)
    # Keep the relation word and its object: from each answered relation word to the next relation word.
    starts = torch.cumsum(relation.long(), 1)
    segment_answered = torch.zeros(input_ids.shape[0], input_ids.shape[1] + 1, dtype=torch.bool)
    rows, positions = answered.nonzero(as_tuple=True)
    segment_answered[rows, starts[rows, positions]] = True
    kept = torch.gather(segment_answered, 1, starts) & real & ~subject
    return subject, kept


def flm_targets(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: torch.Tensor
) -> torch.Tensor:
    """FLM (Wang et al., CVPR 2023): every word is a target, so `flm_labels` is the original id at every
    real, non-special token and -100 elsewhere; the input is not masked.

    The special tokens are those MLM never chooses (the collator passes the same `special_ids`), so every
    position MLM may mask holds its original id here; the model restores the unmasked text for FLM's passes
    from these labels when a batch trains both. [SEP] is no target: it is always last and says nothing of
    the image, and LXMERT-S generates no text that would need an end token.
    """
    return torch.where(attention_mask.bool() & ~torch.isin(input_ids, special_ids), input_ids, IGNORE_INDEX)


def mask_regions(
    features: torch.Tensor,
    visual_attention_mask: torch.Tensor,
    generator: torch.Generator,
    probability: float = 0.15,
) -> torch.Tensor:
    """MRFR/MOC region masking (LXMERT), in place: choose each valid region with `probability`; a chosen
    feature is zeroed 80%, replaced by a random valid region of another image of the batch 10%, kept 10%.

    Returns `region_mask` (B, R). In place because a batch of 36 x 2048 features is large and only the chosen
    rows change; the caller keeps its own copy of the originals as the MRFR target. In a batch of one image
    the replacement comes from the same image, as there is no other. Boxes are kept, as in LXMERT.
    """
    batch_size, num_regions = visual_attention_mask.shape
    valid = visual_attention_mask.bool()
    chosen = (torch.rand((batch_size, num_regions), generator=generator) < probability) & valid
    action = torch.rand((batch_size, num_regions), generator=generator)
    # Adding 1..B-1 modulo B picks any image but the region's own (its own when B == 1).
    shift = torch.randint(1, max(batch_size, 2), (batch_size, num_regions), generator=generator)
    donor_image = (torch.arange(batch_size)[:, None] + shift) % batch_size
    donor_count = valid.sum(dim=1)[donor_image]
    donor_region = (torch.rand((batch_size, num_regions), generator=generator) * donor_count).long()
    replaced = chosen & (action >= 0.8) & (action < 0.9)
    # Read the donors before zeroing, so that a donor chosen for zeroing still gives its own feature.
    replacements = features[donor_image[replaced], donor_region[replaced]]
    features[chosen & (action < 0.8)] = 0.0
    features[replaced] = replacements
    return chosen


def shuffle_triplets(
    features: torch.Tensor,
    visual_attention_mask: torch.Tensor,
    generator: torch.Generator,
    probability: float = 0.05,
) -> torch.Tensor:
    """IFRS (§3.1, eq. 1), in place: regions form consecutive triplets (r_i, r_i+1, r_i+2), i = 0, 3, 6, ...;
    the features of each triplet of valid regions are, with `probability`, put in a random non-identity order.

    Only the features move; the boxes stay in their slots. LXMERT-S has no region-slot embedding, so its
    encoder is equivariant to permuting regions: had each box travelled with its feature, a shuffled image
    would be a mere permutation of the original, its outputs the permuted originals, and the shuffle
    undetectable. With the boxes left behind, a slot's box says which region belongs there and its feature
    now disagrees. Returns `ifrs_mask` (B, R), true at every slot of a shuffled triplet; regions past the
    last whole triplet never move.
    """
    batch_size, num_regions = visual_attention_mask.shape
    num_triplets = num_regions // 3
    in_triplets = visual_attention_mask[:, : 3 * num_triplets].bool().view(batch_size, num_triplets, 3)
    chosen = (torch.rand((batch_size, num_triplets), generator=generator) < probability) & in_triplets.all(-1)
    permutation = torch.randint(
        len(NON_IDENTITY_PERMUTATIONS), (batch_size, num_triplets), generator=generator
    )
    image, triplet = torch.nonzero(chosen, as_tuple=True)
    target = (triplet * 3)[:, None] + torch.arange(3)
    source = (triplet * 3)[:, None] + NON_IDENTITY_PERMUTATIONS[permutation[image, triplet]]
    # The right-hand side is a copy, so reading and writing the same tensor is safe.
    features[image[:, None], target] = features[image[:, None], source]
    ifrs_mask = torch.zeros((batch_size, num_regions), dtype=torch.bool)
    ifrs_mask[:, : 3 * num_triplets] = chosen.repeat_interleave(3, dim=1)
    return ifrs_mask


def concept_words(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, concept_ids: torch.Tensor
) -> torch.Tensor:
    """WPG (MVP's phrase grounding): (B, L) true at the words that name a concept, here a detector object or
    attribute class (`class_word_ids` of the two vocabularies), the words whose best region WPG compares
    across images."""
    return attention_mask.bool() & torch.isin(input_ids, concept_ids)


def topic_targets(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    object_ids: torch.Tensor,
    visual_attention_mask: torch.Tensor,
    class_pieces: torch.Tensor,
    vocab_size: int,
    special_ids: torch.Tensor,
) -> torch.Tensor:
    """TITP/TITS (§3.2 eq. 2, §3.3 eq. 4): multi-hot (B, V), 1 for WordPiece ids that are both in the text
    and in a class name of a detected (valid) region of the image fed."""
    batch_size = input_ids.shape[0]
    # Ids that must not count are sent to an extra column `vocab_size`, dropped at the end.
    text_ids = torch.where(attention_mask.bool() & ~torch.isin(input_ids, special_ids), input_ids, vocab_size)
    region_pieces = class_pieces[object_ids.clamp(0, len(class_pieces) - 1)]
    region_pieces = torch.where(
        visual_attention_mask.bool()[..., None] & (region_pieces >= 0), region_pieces, vocab_size
    )
    in_text = torch.zeros((batch_size, vocab_size + 1), dtype=torch.bool).scatter_(1, text_ids, True)
    in_image = torch.zeros((batch_size, vocab_size + 1), dtype=torch.bool)
    in_image.scatter_(1, region_pieces.view(batch_size, -1), True)
    return (in_text & in_image)[:, :vocab_size].float()


def tag_targets(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    object_ids: torch.Tensor,
    visual_attention_mask: torch.Tensor,
    class_pieces: torch.Tensor,
    special_ids: torch.Tensor,
) -> torch.Tensor:
    """TAG: (B, L, R) true where text token l is a WordPiece of the detected class name of (valid) region r of
    the image fed, so a word names every region the detector gave its name (a repeated label, a duplicate
    box); special tokens and padding name none."""
    words = attention_mask.bool() & ~torch.isin(input_ids, special_ids)
    region_pieces = class_pieces[object_ids.clamp(0, len(class_pieces) - 1)]  # (B, R, K), -1 padded
    named = (input_ids[:, :, None, None] == region_pieces[:, None, :, :]).any(-1)
    return named & words[:, :, None] & visual_attention_mask.bool()[:, None, :]


def _first_and_last(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) positions of the first and the last true entry of each row of a (B, L) mask (0 where none)."""
    length = mask.shape[1]
    return mask.int().argmax(1), length - 1 - mask.flip(1).int().argmax(1)


def _swapped(input_ids: torch.Tensor, words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each text with the first and the last of its `words` exchanged, and whether that changed it."""
    first, last = _first_and_last(words)
    rows = torch.arange(len(input_ids))
    swapped = input_ids.clone()
    swapped[rows, first], swapped[rows, last] = input_ids[rows, last], input_ids[rows, first]
    return swapped, words.sum(1).ge(2) & (input_ids[rows, first] != input_ids[rows, last])


def binding_negatives(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    words: BindingWords,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard negatives that keep a caption's words and change what binds to what (NegCLIP's and ARO's): the
    first and the last attribute word exchanged ("a blue car left of a red dog" for "a red car left of a blue
    dog"), the first and the last object word exchanged, or every relation and number word replaced by another
    of its kind ("right of", "three"). Each text gets one of the changes it allows, drawn uniformly. Returns
    the (B, L) negative texts and (B,) whether a text has one; a bag of its words cannot tell a negative from
    its caption, only what each word is bound to can.
    """
    real = attention_mask.bool()
    attributes, attribute_ok = _swapped(input_ids, real & torch.isin(input_ids, words.attributes))
    objects, object_ok = _swapped(input_ids, real & torch.isin(input_ids, words.objects))
    opposite = words.opposites[input_ids.clamp(0, len(words.opposites) - 1)]
    replaceable = real & (opposite >= 0)
    replaced, replace_ok = torch.where(replaceable, opposite, input_ids), replaceable.any(1)
    choices = torch.stack([attribute_ok, object_ok, replace_ok], 1)
    count = choices.sum(1)
    nth = (torch.rand(len(input_ids), generator=generator) * count).long()
    kind = ((choices.cumsum(1) == nth[:, None] + 1) & choices).int().argmax(1)
    negative = torch.stack([attributes, objects, replaced], 1)[torch.arange(len(input_ids)), kind]
    return torch.where((count > 0)[:, None], negative, input_ids), count > 0


def region_binding_negatives(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    regions: dict[str, torch.Tensor],
    words: RegionWords,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hard negatives on the image side: the caption kept, and the regions of one object it names replaced by
    regions of the same class with another attribute, one the caption does not name ("a red car" with the
    car now a green car of another image). Only a region whose class word and attribute word both appear in
    the caption is chosen, and every region of its class in the image is replaced (a duplicate box left red
    would still match the caption). Each replaced slot takes a donor region of the batch drawn on its own, its
    features and its box together: a feature at another region's box would tell the negative apart by the
    mismatch alone. Returns (B, R) the slots to replace, (B, R, F) and (B, R, 4) the features and boxes they
    take (zero at the other slots), and (B,) whether a row has such a negative.
    """
    objects, attributes = regions["object_ids"], regions["attribute_ids"]
    num_objects, num_attributes = len(words.objects), len(words.attributes)
    objects, attributes = objects.clamp(0, num_objects - 1), attributes.clamp(0, num_attributes - 1)
    valid = regions["visual_attention_mask"].bool()
    real = attention_mask.bool()

    def named(candidates: torch.Tensor) -> torch.Tensor:
        """(B, N) whether each row's text holds each of the (B, N) or (1, N) word ids (-1: none)."""
        return ((input_ids[:, :, None] == candidates[:, None, :]) & real[:, :, None]).any(1)

    batch_size, num_regions = objects.shape
    rows = torch.arange(batch_size)
    changeable = valid & (words.objects[objects] >= 0) & (words.attributes[attributes] >= 0)
    changeable &= named(words.objects[objects]) & named(words.attributes[attributes])
    # Donors are counted by (class, attribute) so that no (B, R, batch regions) tensor is built: the
    # attributes a row's region r may take are those other than its own whose word the row does not name.
    donor_ok = valid & (words.attributes[attributes] >= 0)
    counts = torch.zeros(num_objects, num_attributes)
    counts.index_put_((objects[donor_ok], attributes[donor_ok]), torch.ones(()), accumulate=True)
    takeable = ~named(words.attributes[None, :]) & (words.attributes >= 0)  # (B, A)
    other = attributes[:, :, None] != torch.arange(num_attributes)  # (B, R, A)
    has = changeable & ((counts[objects] > 0) & other & takeable[:, None, :]).any(2)
    chosen = _nth_true(has, torch.rand(batch_size, generator=generator))
    slots = valid & (objects == objects[rows, chosen][:, None]) & has.any(1)[:, None]
    # (B, batch regions): the regions that may replace each row's chosen object, for every slot of its class
    allowed_attribute = other[rows, chosen] & takeable  # (B, A)
    donors = (
        donor_ok.reshape(1, -1)
        & (objects.reshape(1, -1) == objects[rows, chosen][:, None])
        & allowed_attribute[:, attributes.reshape(-1)]
    )
    cumulative = donors.long().cumsum(1)
    nth = (torch.rand(batch_size, num_regions, generator=generator) * cumulative[:, -1:]).long()
    donor = torch.searchsorted(cumulative, nth + 1).clamp(max=donors.shape[1] - 1)
    # copied at the replaced slots only (zero elsewhere, where the model keeps the image's own)
    features = regions["features"].new_zeros(regions["features"].shape)
    boxes = regions["boxes"].new_zeros(regions["boxes"].shape)
    features[slots] = regions["features"].reshape(batch_size * num_regions, -1)[donor[slots]]
    boxes[slots] = regions["boxes"].reshape(batch_size * num_regions, -1)[donor[slots]]
    return slots, features, boxes, has.any(1)


def _nth_true(mask: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """(B,) the position of a uniformly drawn true entry of each row of a (B, N) mask (0 where none), from
    (B,) uniform numbers in [0, 1)."""
    nth = (uniform * mask.sum(1)).long()
    return ((mask.cumsum(1) == nth[:, None] + 1) & mask).int().argmax(1)


def mismatch_images(
    image_index: torch.Tensor,
    pool: torch.Tensor,
    generator: torch.Generator,
    hard_negatives: np.ndarray | None = None,
    probability: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ITM / ITM_HS (§3.3, eq. 3): with `probability` feed another image than the text's.

    Negatives come from `pool`, the sorted store rows a negative may be (the stage corpus's images, so never a
    held-out image of a downstream split). ITM_HS: a random member of the image's `hard_negatives` row (-1
    entries are empty; the caller keeps only members of the pool); a uniformly random other pool image when
    the row is empty (the paper's rule) or when no hard negatives are given (plain ITM). Returns the store
    rows to feed and `itm_labels` (1 = the fed image is the text's).
    """
    batch_size = len(image_index)
    mismatched = torch.rand(batch_size, generator=generator) < probability
    # Drawing from the pool less the own image (when it is a member) and skipping its slot gives a uniform
    # other image.
    own = torch.searchsorted(pool, image_index).clamp(max=len(pool) - 1)
    member = pool[own] == image_index
    draw = (torch.rand(batch_size, generator=generator) * (len(pool) - member.long())).long()
    other = pool[draw + (member & (draw >= own)).long()]
    pick = torch.rand(batch_size, generator=generator)
    if hard_negatives is not None:
        candidates = torch.from_numpy(np.asarray(hard_negatives[image_index.numpy()], dtype=np.int64))
        valid = candidates >= 0
        count = valid.sum(dim=1)
        nth = (pick * count).long()
        position = ((valid.cumsum(dim=1) == nth[:, None] + 1) & valid).long().argmax(dim=1)
        hard = candidates.gather(1, position[:, None]).squeeze(1)
        other = torch.where(count > 0, hard, other)
    fed_index = torch.where(mismatched, other, image_index)
    return fed_index, (~mismatched).long()


@dataclass(frozen=True)
class BindingWords:
    """The words a binding negative changes (`binding_negatives`), as token ids: `attributes` and `objects`,
    the one-piece words of the detector's attribute and object names; `opposites` (vocab_size,) maps a
    relation or number word to another of its kind (left -> right, two -> three) and every other id to -1."""

    attributes: torch.Tensor
    objects: torch.Tensor
    opposites: torch.Tensor


@dataclass(frozen=True)
class RegionWords:
    """What region binding negatives read (`region_binding_negatives`): the token id of each detector object
    class and each attribute class, by the store's `object_ids` and `attribute_ids`; -1 where the name is not
    one word piece."""

    objects: torch.Tensor
    attributes: torch.Tensor


# Words a binding negative replaces by another of their kind: spatial relations by their opposite, numbers by
# a neighbour. Only those that are one WordPiece of the tokenizer are used. MLM may prefer the spatial ones
# (`relation_word_ids`).
SPATIAL_OPPOSITES = {
    "left": "right", "right": "left", "above": "below", "below": "above", "top": "bottom", "bottom": "top",
    "over": "under", "under": "over", "front": "behind", "behind": "front", "inside": "outside",
    "outside": "inside",
}  # fmt: skip
# Where each spatial relation word puts its subject in the image (x to the right, y down), for RPT's side
# targets; the other relation words ("front", "inside") say nothing a 2-D box shows.
SPATIAL_DIRECTIONS = {
    "left": (-1.0, 0.0), "right": (1.0, 0.0), "above": (0.0, -1.0), "below": (0.0, 1.0), "over": (0.0, -1.0),
    "under": (0.0, 1.0),
}  # fmt: skip
OPPOSITE_WORDS = {
    **SPATIAL_OPPOSITES, "one": "two", "two": "three", "three": "two", "four": "three", "five": "four"
}  # fmt: skip


@dataclass(frozen=True)
class RelationSides:
    """RPT's side targets: `directions` (vocabulary, 2), the image direction of each one-piece spatial
    relation word (`SPATIAL_DIRECTIONS`, zeros for every other id); `min_confidence`, the detection confidence
    a region needs to be pointed at (the store's regions include background and doubtful boxes)."""

    directions: torch.Tensor
    min_confidence: float


@dataclass(frozen=True)
class PieceSettings:
    """What a stage's collator fixes once and its pieces read in every batch.

    `negative_pool`: the sorted store rows a mismatched image may be (the stage corpus's images).
    `hard_negatives`: ITM_HS's (store images, M) table of look-alikes, -1 for none. `class_wordpieces`: the
    (C, K) WordPiece ids of each detector class name (TITP / TITS). `class_word_ids`: the one-piece words of
    the object and attribute names, the concepts WPG grounds and the words the phrase stage's MLM prefers
    (with `class_word_mlm_probability`); `relation_word_ids`, the one-piece spatial relation words, those it
    masks with `relation_word_mlm_probability`, and whose subjects it hides whole with
    `relation_subject_mlm_probability` (`relation_subjects`); `relation_sides`, when set, makes RPT point at
    every confident region on a relation word's side of its object. `binding_words`: when set, ITM_VSC also
    scores a binding negative of each caption that has one (`binding_negatives`); `region_words`: when set,
    also an image with one named object's attribute changed (`region_binding_negatives`)."""

    mask_token_id: int
    vocab_size: int
    special_ids: torch.Tensor
    mlm_probability: float = 0.15
    class_word_mlm_probability: float | None = None
    relation_word_ids: torch.Tensor | None = None
    relation_word_mlm_probability: float | None = None
    relation_subject_mlm_probability: float | None = None
    relation_sides: RelationSides | None = None
    region_mask_probability: float = 0.15
    triplet_shuffle_probability: float = 0.05
    mismatch_probability: float = 0.5
    negative_pool: torch.Tensor | None = None
    hard_negatives: np.ndarray | None = None
    class_wordpieces: torch.Tensor | None = None
    class_word_ids: torch.Tensor | None = None
    binding_words: BindingWords | None = None
    region_words: RegionWords | None = None


class PretrainingBatch:
    """One batch while the pieces of a stage's tasks add to it, in the order of `PRETRAINING_TASKS`.

    It starts as the rows' text inputs and each text's own image (`image_index`, store rows). A piece that
    chooses which image a row is fed (ITM's mismatches) calls `feed` before anything reads the regions; the
    regions are read from the store once, on first use, for the image each row is fed. IFRS moves features
    only, never boxes, so a slot is its box: every region target at slot p describes the detector's region p,
    the one whose box is fed at p (IFRS's target is the slot's original feature, MRFR at a masked slot
    regresses the region its box shows, MOC asks that region's class). Region pieces corrupt one copy of the
    features (`features_to_corrupt`), shuffled before they are masked; the originals stay intact as targets.
    MRFR and MOC share one region mask (`region_mask`).
    """

    def __init__(
        self,
        inputs: dict[str, torch.Tensor],
        image_index: torch.Tensor,
        generator: torch.Generator,
        settings: PieceSettings,
        read_regions: Callable[[torch.Tensor], dict[str, torch.Tensor]],
        describe_region: Callable[[int, int], str],
    ):
        """`read_regions(fed_index)`: features, boxes, detector labels and `visual_attention_mask` of store
        rows. `describe_region(row, region)`: how an error names a region of the image fed to a row."""
        self.inputs = inputs
        self.labels: dict[str, torch.Tensor] = {}
        self.image_index = image_index
        self.generator = generator
        self.settings = settings
        self.describe_region = describe_region
        self._read_regions = read_regions
        self._fed_index = image_index
        self._regions: dict[str, torch.Tensor] | None = None
        self._corrupted: torch.Tensor | None = None
        self._region_mask: torch.Tensor | None = None
        self._named_regions: torch.Tensor | None = None

    @property
    def fed_index(self) -> torch.Tensor:
        """(B,) the store row of the image each row is fed (its text's own unless a piece mismatched it)."""
        return self._fed_index

    def feed(self, fed_index: torch.Tensor) -> None:
        if self._regions is not None:
            raise RuntimeError("feed: the regions were read already; a piece that chooses images runs first")
        self._fed_index = fed_index

    @property
    def regions(self) -> dict[str, torch.Tensor]:
        """The fed images' regions: `features` (original), `boxes`, `object_ids`, `object_confidences`,
        `attribute_ids`, `attribute_confidences` (B, R, ...) and `visual_attention_mask` (B, R) bool."""
        if self._regions is None:
            self._regions = self._read_regions(self._fed_index)
        return self._regions

    def features_to_corrupt(self) -> torch.Tensor:
        """The copy of the features that the model is fed and the region pieces change in place."""
        if self._corrupted is None:
            self._corrupted = self.regions["features"].clone()
        return self._corrupted

    def region_mask(self) -> torch.Tensor:
        """MRFR / MOC's (B, R) masked regions, drawn once for both."""
        if self._region_mask is None:
            self._region_mask = mask_regions(
                self.features_to_corrupt(),
                self.regions["visual_attention_mask"],
                self.generator,
                self.settings.region_mask_probability,
            )
        return self._region_mask

    def named_regions(self) -> torch.Tensor:
        """(B, L, R) `tag_targets` of the text as written (the pieces that read it run before MLM masks it):
        which regions of the image fed each word names, computed once for TAG, WBR and RPT."""
        if self._named_regions is None:
            _check_object_ids(self)
            self._named_regions = tag_targets(
                self.inputs["input_ids"],
                self.inputs["attention_mask"],
                self.regions["object_ids"],
                self.regions["visual_attention_mask"],
                self.settings.class_wordpieces,
                self.settings.special_ids,
            )
        return self._named_regions

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """What the model takes: the (corrupted) text and visual inputs and every piece's labels."""
        regions = self.regions
        features = regions["features"] if self._corrupted is None else self._corrupted
        return {
            **self.inputs,
            **self.labels,
            "visual_feats": features,
            "visual_pos": regions["boxes"],
            "visual_attention_mask": regions["visual_attention_mask"].long(),
        }


def _mismatch(batch: PretrainingBatch, hard_negatives: np.ndarray | None) -> None:
    settings = batch.settings
    fed_index, batch.labels["itm_labels"] = mismatch_images(
        batch.image_index,
        settings.negative_pool,
        batch.generator,
        hard_negatives,
        settings.mismatch_probability,
    )
    batch.feed(fed_index)


def random_negatives_piece(batch: PretrainingBatch) -> None:
    """ITM: `itm_labels`, a random other image of the corpus fed with `mismatch_probability`."""
    _mismatch(batch, None)


def hard_negatives_piece(batch: PretrainingBatch) -> None:
    """ITM_HS (§3.3): `itm_labels`, a look-alike of the text's image fed with `mismatch_probability`."""
    _mismatch(batch, batch.settings.hard_negatives)


def tag_piece(batch: PretrainingBatch) -> None:
    """TAG: `tag_targets`, which regions each word names (by the detector's class names), from the text as
    written (before MLM masks it): a masked tag still names its regions."""
    batch.labels["tag_targets"] = batch.named_regions()


def word_box_piece(batch: PretrainingBatch) -> None:
    """WBR: `wbr_mask`, the words that name exactly one region of the image fed (by the detector's class
    names, as TAG reads them, from the text as written), and `wbr_targets` (B, L, 4), that region's box
    (x1, y1, x2, y2; zeros elsewhere). A word naming several regions has no one place to point at."""
    named = batch.named_regions()
    once = named.sum(-1) == 1
    boxes = batch.regions["boxes"][..., :4]
    chosen = torch.gather(boxes, 1, named.int().argmax(-1)[..., None].expand(-1, -1, 4))
    batch.labels["wbr_mask"] = once
    batch.labels["wbr_targets"] = torch.where(once[..., None], chosen, torch.zeros_like(chosen))


def relation_pointing_piece(batch: PretrainingBatch) -> None:
    """RPT: `relation_targets` (B, R), in a text with exactly one spatial relation word, the regions of the
    image fed that its subject names (the object and attribute words right before it, `relation_subjects`,
    named by the detector's class names as TAG reads them), from the text as written, none elsewhere; and
    `relation_input_ids`, the text as written with those subject words hidden ([MASK]), the question the
    relation readout answers. With `relation_sides` the targets are instead every confident region whose
    box centre lies on the relation word's side of its object's ("a [MASK] left of a ball": whatever is left
    of the ball), where the words after the relation word name exactly one confident region and the word has
    a direction; no target elsewhere. The subject is then one right answer of several, as it is in VQA's "what
    is left of the ball?", and the loss can reach zero."""
    input_ids, attention_mask, settings = (
        batch.inputs["input_ids"],
        batch.inputs["attention_mask"],
        batch.settings,
    )
    relation = torch.isin(input_ids, settings.relation_word_ids) & attention_mask.bool()
    subject, kept = relation_subjects(
        input_ids, attention_mask, settings.relation_word_ids, settings.class_word_ids, batch.generator, 1.0
    )
    named = batch.named_regions()
    asked = (relation.sum(1) == 1) & subject.any(1)
    targets = (named & subject[..., None]).any(1)
    if settings.relation_sides is not None:
        targets = _side_regions(batch, settings.relation_sides, named, relation, kept & ~relation)
    batch.labels["relation_targets"] = targets & asked[:, None]
    batch.labels["relation_input_ids"] = torch.where(
        subject & asked[:, None], settings.mask_token_id, input_ids
    )


def _side_regions(
    batch: PretrainingBatch,
    sides: RelationSides,
    named: torch.Tensor,
    relation: torch.Tensor,
    reference_words: torch.Tensor,
) -> torch.Tensor:
    """(B, R) the confident regions whose box centre lies on the side of the reference region (the one
    confident region the `reference_words` name, concept words only) that the row's relation word points to;
    none in a row whose reference is not one region or whose relation word has no direction."""
    confident = batch.regions["visual_attention_mask"].bool() & (
        batch.regions["object_confidences"] >= sides.min_confidence
    )
    concept = torch.isin(batch.inputs["input_ids"], batch.settings.class_word_ids)
    reference = (named & (reference_words & concept)[..., None]).any(1) & confident  # (B, R)
    word = (batch.inputs["input_ids"] * relation).amax(1)  # the relation word's id (0 where none)
    direction = sides.directions[word]  # (B, 2)
    boxes = batch.regions["boxes"][..., :4].float()
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2
    anchor = (centres * reference[..., None]).sum(1, keepdim=True)
    side = ((centres - anchor) * direction[:, None, :]).sum(-1) > 0
    usable = (reference.sum(1) == 1) & direction.abs().sum(-1).gt(0)
    return side & ~reference & confident & usable[:, None]


def matched_pairs_piece(batch: PretrainingBatch) -> None:
    """ITM_VSC: every row is fed its own image (`itm_labels` all 1) and `image_ids` name it; the model mines
    the negatives in the batch from the VSC similarities. With `binding_words`, also each caption's binding
    negative (`binding_input_ids`, `binding_mask`: `binding_negatives`), which MLM masks as it masks the
    caption. With `region_words`, a row may instead keep its caption and change its image
    (`binding_region_slots` take `binding_region_features` and `binding_region_boxes`:
    `region_binding_negatives`); a row that allows both kinds gets one of the two, drawn evenly."""
    batch.feed(batch.image_index)
    batch.labels["itm_labels"] = torch.ones_like(batch.image_index)
    batch.labels["image_ids"] = batch.fed_index
    settings, input_ids = batch.settings, batch.inputs["input_ids"]
    if settings.binding_words is None and settings.region_words is None:
        return
    negatives, has_negative = input_ids, torch.zeros(len(input_ids), dtype=torch.bool)
    if settings.binding_words is not None:
        negatives, has_negative = binding_negatives(
            input_ids, batch.inputs["attention_mask"], settings.binding_words, batch.generator
        )
    if settings.region_words is not None:
        slots, features, boxes, has_region = region_binding_negatives(
            input_ids, batch.inputs["attention_mask"], batch.regions, settings.region_words, batch.generator
        )
        coin = torch.rand(len(input_ids), generator=batch.generator) < 0.5
        use_region = has_region & (~has_negative | coin)
        negatives = torch.where(use_region[:, None], input_ids, negatives)
        has_negative = has_negative | has_region
        batch.labels["binding_region_slots"] = slots & use_region[:, None]
        batch.labels["binding_region_features"], batch.labels["binding_region_boxes"] = features, boxes
    batch.labels["binding_input_ids"], batch.labels["binding_mask"] = negatives, has_negative


def contrastive_piece(batch: PretrainingBatch) -> None:
    """VSC: `vsc_labels`, each text's own image, and `image_ids`, the image fed in each row (store rows): text
    i and image j are a positive pair when `vsc_labels[i] == image_ids[j]`, which holds for a repeated image
    and fails for a row ITM mismatched. `vsc_visual_feats`: the fed regions' original features, which the
    image embedding reads whatever MRFR and IFRS do to the features the encoder is fed."""
    batch.labels["vsc_labels"] = batch.image_index
    batch.labels["image_ids"] = batch.fed_index
    batch.labels["vsc_visual_feats"] = batch.regions["features"]


def _check_object_ids(batch: PretrainingBatch) -> None:
    """Every valid region's detected class is a name of object_vocab (the pieces read its name)."""
    class_pieces = batch.settings.class_wordpieces
    object_ids, visual_mask = batch.regions["object_ids"], batch.regions["visual_attention_mask"]
    unknown = visual_mask & ((object_ids < 0) | (object_ids >= len(class_pieces)))
    if unknown.any():
        row, region = (int(axis[0]) for axis in torch.nonzero(unknown, as_tuple=True))
        raise ValueError(
            f"{batch.describe_region(row, region)}: field 'object_ids' is {int(object_ids[row, region])}, "
            f"outside the {len(class_pieces)} names of object_vocab"
        )


def _topic(batch: PretrainingBatch) -> torch.Tensor:
    _check_object_ids(batch)
    return topic_targets(
        batch.inputs["input_ids"],
        batch.inputs["attention_mask"],
        batch.regions["object_ids"],
        batch.regions["visual_attention_mask"],
        batch.settings.class_wordpieces,
        batch.settings.vocab_size,
        batch.settings.special_ids,
    )


def phrase_topic_piece(batch: PretrainingBatch) -> None:
    """TITP (§3.2, eq. 2): `titp_labels`, the words both in the phrases and in the detected class names."""
    batch.labels["titp_labels"] = _topic(batch)


def sentence_topic_piece(batch: PretrainingBatch) -> None:
    """TITS (§3.3, eq. 4): `tits_labels`, the words both in the caption and in the detected class names."""
    batch.labels["tits_labels"] = _topic(batch)


def shuffle_piece(batch: PretrainingBatch) -> None:
    """IFRS (§3.1): `ifrs_mask`, the slots of shuffled triplets, and `ifrs_labels`, the original features."""
    batch.labels["ifrs_mask"] = shuffle_triplets(
        batch.features_to_corrupt(),
        batch.regions["visual_attention_mask"],
        batch.generator,
        batch.settings.triplet_shuffle_probability,
    )
    batch.labels["ifrs_labels"] = batch.regions["features"]


def region_regression_piece(batch: PretrainingBatch) -> None:
    """MRFR: `region_mask` and `mrfr_labels`, the original features of the masked regions' slots."""
    batch.labels["region_mask"] = batch.region_mask()
    batch.labels["mrfr_labels"] = batch.regions["features"]


def object_classification_piece(batch: PretrainingBatch) -> None:
    """MOC: `region_mask` (the regions are masked as for MRFR) and the detector's object and attribute labels
    and confidences of every region."""
    batch.labels["region_mask"] = batch.region_mask()
    regions = batch.regions
    batch.labels["moc_object_labels"] = regions["object_ids"]
    batch.labels["moc_object_confidences"] = regions["object_confidences"]
    batch.labels["moc_attribute_labels"] = regions["attribute_ids"]
    batch.labels["moc_attribute_confidences"] = regions["attribute_confidences"]


def free_language_modeling_piece(batch: PretrainingBatch) -> None:
    """FLM: `flm_labels`, every word of the text before MLM masks it."""
    batch.labels["flm_labels"] = flm_targets(
        batch.inputs["input_ids"], batch.inputs["attention_mask"], batch.settings.special_ids
    )


def grounding_piece(batch: PretrainingBatch) -> None:
    """WPG: `wpg_concept_mask`, the words naming a detector object or attribute class, and `image_ids`, the
    image fed in each row (the model pairs each text with another row's image)."""
    batch.labels["wpg_concept_mask"] = concept_words(
        batch.inputs["input_ids"], batch.inputs["attention_mask"], batch.settings.class_word_ids
    )
    batch.labels["image_ids"] = batch.fed_index


def masked_language_modeling_piece(batch: PretrainingBatch) -> None:
    """MLM: masks the text (`input_ids`) and adds `mlm_labels`; last, so that the other text pieces read the
    text as written."""
    settings = batch.settings
    preferred = [
        (ids, probability)
        for ids, probability in (
            (settings.class_word_ids, settings.class_word_mlm_probability),
            (settings.relation_word_ids, settings.relation_word_mlm_probability),
        )
        if probability is not None
    ]
    always = never = None
    if settings.relation_subject_mlm_probability is not None:
        always, never = relation_subjects(
            batch.inputs["input_ids"],
            batch.inputs["attention_mask"],
            settings.relation_word_ids,
            settings.class_word_ids,
            batch.generator,
            settings.relation_subject_mlm_probability,
        )
    batch.inputs["input_ids"], batch.labels["mlm_labels"] = mask_tokens(
        batch.inputs["input_ids"],
        batch.inputs["attention_mask"],
        mask_token_id=settings.mask_token_id,
        vocab_size=settings.vocab_size,
        special_ids=settings.special_ids,
        generator=batch.generator,
        probability=settings.mlm_probability,
        preferred=preferred,
        always=always,
        never=never,
    )
    if "binding_input_ids" in batch.labels:
        # The same positions hidden the same way, so that a negative differs from its caption only by the
        # change; a text one whose change MLM hid entirely is no negative any more (a region one stays).
        chosen = batch.labels["mlm_labels"] != IGNORE_INDEX
        masked = batch.inputs["input_ids"]
        negatives = torch.where(chosen, masked, batch.labels["binding_input_ids"])
        changed = (negatives != masked).any(1)
        if "binding_region_slots" in batch.labels:
            changed |= batch.labels["binding_region_slots"].any(1)
        batch.labels["binding_input_ids"] = negatives
        batch.labels["binding_mask"] = batch.labels["binding_mask"] & changed


__all__ = [
    "NON_IDENTITY_PERMUTATIONS",
    "OPPOSITE_WORDS",
    "SPATIAL_OPPOSITES",
    "BindingWords",
    "PieceSettings",
    "PretrainingBatch",
    "RegionWords",
    "binding_negatives",
    "concept_words",
    "flm_targets",
    "mask_regions",
    "mask_tokens",
    "mismatch_images",
    "region_binding_negatives",
    "relation_subjects",
    "shuffle_triplets",
    "tag_targets",
    "topic_targets",
]
