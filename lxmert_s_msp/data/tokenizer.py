"""WordPiece tokenizers: BERT's uncased one for real runs, a locally built one for tests and synthetic data.

LXMERT (and LXMERT-S) use `bert-base-uncased`. Building a tokenizer of the same kind with the `tokenizers`
library lets tests and the synthetic corpus run with no download while exercising the same code paths: the
result is a `transformers.BertTokenizerFast` (lower-casing BERT normaliser, `BertPreTokenizer`, WordPiece with
`##` continuations, `[CLS] text [SEP]` template) with `save_pretrained` / `from_pretrained`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from tokenizers import normalizers, pre_tokenizers
from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerBase

# BERT's special tokens; listed first so that [PAD] is id 0, which the model's `pad_token_id` assumes.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def build_wordpiece_tokenizer(
    texts: Iterable[str], vocab_size: int = 30522, min_frequency: int = 1
) -> BertTokenizerFast:
    """An uncased WordPiece vocabulary of at most `vocab_size` entries for `texts`, BERT-style, and a pure
    function of them: the special tokens, every character of the words (alone and as a `##` continuation, so
    no word of these characters is unknown), then the words seen at least `min_frequency` times, the most
    frequent first (ties in alphabetical order), whole.

    Not the `tokenizers` WordPiece trainer: its vocabulary changes from process to process on the same texts
    (it numbers continuation pieces in hash-map order and breaks ties between merges by those numbers,
    huggingface/tokenizers#1794), and with it every token id and every weight trained on them.
    """
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts = Counter(
        word for text in texts for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    )
    characters = sorted({character for word in counts for character in word})
    continuations = sorted({f"##{character}" for word in counts for character in word[1:]})
    alphabet = [*SPECIAL_TOKENS, *characters, *continuations]
    if vocab_size < len(alphabet):
        raise ValueError(
            f"vocab_size: expected at least {len(alphabet)} (the special tokens and the texts' characters, "
            f"alone and as continuations), got {vocab_size}"
        )
    known = set(alphabet)
    frequent = sorted(
        (word for word, count in counts.items() if count >= min_frequency and word not in known),
        key=lambda word: (-counts[word], word),
    )
    vocabulary = [*alphabet, *frequent[: vocab_size - len(alphabet)]]
    return BertTokenizerFast(vocab={token: index for index, token in enumerate(vocabulary)})


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


# What `save_pretrained` writes into a tokenizer's files that is not the tokenizer: where it was loaded from
# (tokenizer_config.json), and the truncation and padding the last call set (tokenizer.json; every call sets
# its own). Left out of fingerprints, so the same tokenizer, read from two folders or used or not, has one.
NOT_THE_TOKENIZER = {
    "tokenizer_config.json": ("is_local", "local_files_only", "name_or_path", "_commit_hash"),
    "tokenizer.json": ("truncation", "padding"),
}


def pretrained_folder_digest(folder: Path, leave_out: Collection[str] = ()) -> str:
    """sha256 of the files `save_pretrained` wrote into `folder` (a tokenizer's, a model's with its
    processor), by relative path and content, without `NOT_THE_TOKENIZER` and the files in `leave_out`."""
    hasher = hashlib.sha256()
    for path in sorted(path for path in folder.rglob("*") if path.is_file() and path.name not in leave_out):
        hasher.update(path.relative_to(folder).as_posix().encode())
        if path.name in NOT_THE_TOKENIZER:
            settings = json.loads(path.read_text(encoding="utf-8"))
            kept = {key: value for key, value in settings.items() if key not in NOT_THE_TOKENIZER[path.name]}
            hasher.update(json.dumps(kept, sort_keys=True).encode())
            continue
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 24):
                hasher.update(chunk)
    return hasher.hexdigest()


def tokenizer_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of every file `save_pretrained` writes (vocabulary, normaliser and its lower-casing,
    pre-tokeniser, special tokens, template: all that decides a text's ids; `pretrained_folder_digest`)."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return pretrained_folder_digest(Path(folder))


__all__ = [
    "SPECIAL_TOKENS",
    "build_wordpiece_tokenizer",
    "load_tokenizer",
    "pretrained_folder_digest",
    "tokenizer_digest",
    "wordpiece_tokenizer_from_vocabulary",
]
