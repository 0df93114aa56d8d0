"""WordPiece tokenizers: BERT's uncased one for real runs, a locally trained one for tests and synthetic data.

LXMERT (and LXMERT-S) use `bert-base-uncased`. Building a tokenizer of the same kind with the `tokenizers`
library lets tests and the synthetic corpus run with no download while exercising the same code paths: the
result is a `transformers.BertTokenizerFast` (lower-casing BERT normaliser, `BertPreTokenizer`, WordPiece with
`##` continuations, `[CLS] text [SEP]` template) with `save_pretrained` / `from_pretrained`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, normalizers, pre_tokenizers, trainers
from tokenizers.models import WordPiece
from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerBase

# BERT's special tokens; listed first so that [PAD] is id 0, which the model's `pad_token_id` assumes.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def build_wordpiece_tokenizer(
    texts: Iterable[str], vocab_size: int = 30522, min_frequency: int = 1
) -> BertTokenizerFast:
    """Train an uncased WordPiece vocabulary of at most `vocab_size` entries on `texts`, BERT-style."""
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size: expected more than {len(SPECIAL_TOKENS)} (the special tokens), got {vocab_size}"
        )
    backend = Tokenizer(WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix="##",
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return BertTokenizerFast(vocab=backend.get_vocab())


def wordpiece_tokenizer_from_vocabulary(tokens: Sequence[str]) -> BertTokenizerFast:
    """An uncased WordPiece tokenizer whose vocabulary is exactly the special tokens followed by `tokens`.

    Use it when the ids must be known in advance (hand-checked tests); continuation pieces are written with
    BERT's `##` prefix.
    """
    vocabulary = [*SPECIAL_TOKENS, *tokens]
    repeated = sorted(token for token, count in Counter(vocabulary).items() if count > 1)
    if repeated:
        raise ValueError(
            f"tokens: expected unique entries other than {list(SPECIAL_TOKENS)}, got repeats {repeated}"
        )
    return BertTokenizerFast(vocab={token: index for index, token in enumerate(vocabulary)})


def load_tokenizer(name_or_path: str | os.PathLike = "bert-base-uncased") -> PreTrainedTokenizerBase:
    """BERT's uncased WordPiece by default (LXMERT's), or any tokenizer saved with `save_pretrained`. A Hub
    name that cannot be fetched (no internet) is an error saying how to give the data folder its own copy."""
    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except OSError as error:
        raise OSError(
            f"tokenizer {str(name_or_path)!r} could not be loaded ({error}). On a machine without internet, "
            f"save it where it can be fetched (`AutoTokenizer.from_pretrained({str(name_or_path)!r})"
            ".save_pretrained('<data folder>/tokenizer')`) and copy that folder into the data folder: a data "
            "folder's tokenizer/ is used when present (README, 'The data pipeline')"
        ) from error


__all__ = [
    "SPECIAL_TOKENS",
    "build_wordpiece_tokenizer",
    "load_tokenizer",
    "wordpiece_tokenizer_from_vocabulary",
]
