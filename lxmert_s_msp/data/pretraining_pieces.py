"""The collator piece of each MSP pre-training task: whole-batch tensor functions, seeded by a generator.

Each piece works on whole (B, L) / (B, R) tensors, with no loop over tokens or regions, and draws every
random number it needs from the `torch.Generator` it is given, in a fixed order, so one seed reproduces a
batch. The two region pieces change the (B, R, F) features in place, as only a few rows change and a copy
costs more than the rest of the collator. `lxmert_s_msp.data.collators` composes the pieces per stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100

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
    preferred_ids: torch.Tensor | None = None,
    preferred_probability: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MLM (BERT/LXMERT): choose each text token with `probability`; of the chosen 80% become [MASK], 10% a
    random vocabulary id, 10% stay. Returns the new ids and `mlm_labels` (original id where chosen, -100
    elsewhere). Padding and `special_ids` are never chosen: the collator passes all the tokenizer's special
    tokens ([CLS], [SEP], [PAD], and [UNK], a useless target), as Hugging Face's MLM collator does.

    Tokens whose id is in `preferred_ids` are chosen with `preferred_probability` instead: the phrase stage's
    MLM "masks the attribute or category information" (§3.2), so it prefers the class-name words of
    `class_word_ids`.
    """
    eligible = attention_mask.bool() & ~torch.isin(input_ids, special_ids)
    rate = torch.full(input_ids.shape, probability)
    if preferred_ids is not None:
        rate = torch.where(torch.isin(input_ids, preferred_ids), preferred_probability, rate)
    chosen = (torch.rand(input_ids.shape, generator=generator) < rate) & eligible
    action = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    masked = torch.where(chosen & (action < 0.8), mask_token_id, input_ids)
    masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, masked)
    return masked, torch.where(chosen, input_ids, IGNORE_INDEX)


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


def class_wordpieces(class_names: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """(C, K) WordPiece ids of each detector class name, -1 padded: the image side of the topic (§3.2).

    A Visual Genome vocabulary line may list synonyms ("man,men"); the first names the class, as in LXMERT.
    Special tokens ([UNK] for an unknown character) are left out: they carry no topic.
    """
    names = [name.split(",")[0].strip() for name in class_names]
    encoded = tokenizer(names, add_special_tokens=False, padding=True, return_tensors="pt")
    ids = encoded["input_ids"]
    keep = encoded["attention_mask"].bool() & ~torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    return torch.where(keep, ids, -1)


def class_word_ids(class_names: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Ids of the words of detector class names (every synonym, every word of a multi-word name such as
    "tennis racket") that are one WordPiece each: the "attribute or category information" the phrase stage's
    MLM prefers (§3.2). A word split into several pieces is left out, as its pieces ("##et") also occur
    inside unrelated words; on Visual Genome's 1,600 object and 400 attribute names, 1,332 of the 1,941
    distinct names are one word of one piece (docs/benchmarks.md, "Text lengths")."""
    words = sorted({word for name in class_names for synonym in name.split(",") for word in synonym.split()})
    encoded = tokenizer(words, add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    return torch.tensor(sorted({ids[0] for ids in encoded if len(ids) == 1 and ids[0] not in special}))


def concept_words(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, concept_ids: torch.Tensor
) -> torch.Tensor:
    """WPG (MVP's phrase grounding): (B, L) true at the words that name a concept, here a detector object or
    attribute class (`class_word_ids` of the two vocabularies), the words whose best region WPG compares
    across images."""
    return attention_mask.bool() & torch.isin(input_ids, concept_ids)


def matched_pairs(image_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ITM_VSC: every row is fed its own image (`itm_labels` 1); the model mines the negatives in the batch
    from the VSC similarities. Returns the store rows to feed and `itm_labels`."""
    return image_index, torch.ones_like(image_index)


def contrastive_targets(image_index: torch.Tensor, fed_index: torch.Tensor) -> dict[str, torch.Tensor]:
    """VSC: `vsc_labels`, each text's own image, and `image_ids`, the image fed in each row (store rows):
    text i and image j are a positive pair when `vsc_labels[i] == image_ids[j]`, which holds for a repeated
    image and fails for a row ITM mismatched."""
    return {"vsc_labels": image_index, "image_ids": fed_index}


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


__all__ = [
    "IGNORE_INDEX",
    "concept_words",
    "contrastive_targets",
    "matched_pairs",
    "class_word_ids",
    "class_wordpieces",
    "flm_targets",
    "mask_regions",
    "mask_tokens",
    "mismatch_images",
    "shuffle_triplets",
    "topic_targets",
]
