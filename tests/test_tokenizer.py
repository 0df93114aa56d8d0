import pytest
from transformers import AutoTokenizer

from lxmert_s_msp.data.tokenizer import (
    SPECIAL_TOKENS,
    build_wordpiece_tokenizer,
    load_tokenizer,
    tokenizer_digest,
    wordpiece_tokenizer_from_vocabulary,
)

CAPTIONS = [
    "A man riding a red bike down the street.",
    "Two dogs playing with a frisbee on the grass.",
    "A red-striped shirt hanging next to blue jeans.",
    "People walking on a busy street at night.",
] * 3


def test_trained_tokenizer_has_berts_special_tokens_first_and_lower_cases():
    tokenizer = build_wordpiece_tokenizer(CAPTIONS, vocab_size=120)

    assert [tokenizer.convert_ids_to_tokens(index) for index in range(5)] == list(SPECIAL_TOKENS)
    assert (tokenizer.pad_token_id, tokenizer.mask_token_id) == (0, 4)
    assert len(tokenizer) <= 120
    assert tokenizer.is_fast
    encoded = tokenizer("A RED Bike")["input_ids"]
    assert encoded[0] == tokenizer.cls_token_id and encoded[-1] == tokenizer.sep_token_id
    assert encoded == tokenizer("a red bike")["input_ids"]


def test_trained_tokenizer_splits_unseen_words_into_wordpieces():
    tokenizer = build_wordpiece_tokenizer(CAPTIONS, vocab_size=60)

    pieces = tokenizer.tokenize("frisbees")

    assert len(pieces) > 1
    assert all(piece.startswith("##") for piece in pieces[1:])
    assert "[UNK]" not in pieces


def test_saved_tokenizer_reloads_through_load_tokenizer(tmp_path):
    tokenizer = build_wordpiece_tokenizer(CAPTIONS, vocab_size=120)
    tokenizer.save_pretrained(tmp_path)

    reloaded = load_tokenizer(tmp_path)

    assert reloaded.get_vocab() == tokenizer.get_vocab()
    assert (
        reloaded("a man's red-striped shirt")["input_ids"]
        == tokenizer("a man's red-striped shirt")["input_ids"]
    )


def test_the_digest_sees_every_setting_and_not_where_the_tokenizer_was_read_from(tmp_path):
    tokenizer = build_wordpiece_tokenizer(CAPTIONS, vocab_size=120)
    for folder in ("a", "b/c"):
        tokenizer.save_pretrained(tmp_path / folder)
    first, second = load_tokenizer(tmp_path / "a"), load_tokenizer(tmp_path / "b" / "c")
    before = tokenizer_digest(first)
    first(CAPTIONS, truncation=True, max_length=8, padding="max_length")  # leaves its state in tokenizer.json
    assert tokenizer_digest(first) == tokenizer_digest(second) == before
    cased = AutoTokenizer.from_pretrained(tmp_path / "a", do_lower_case=False)
    assert cased.get_vocab() == first.get_vocab()
    assert cased("Red")["input_ids"] != first("Red")["input_ids"]
    assert tokenizer_digest(cased) != tokenizer_digest(first)


def test_tokenizer_from_vocabulary_keeps_the_given_order():
    tokenizer = wordpiece_tokenizer_from_vocabulary(["man", "red", "str", "##ipe", "##d"])

    assert tokenizer("Man striped")["input_ids"] == [2, 5, 7, 8, 9, 3]
    assert tokenizer("cat")["input_ids"] == [2, 1, 3]


@pytest.mark.parametrize("tokens", [["man", "man"], ["[MASK]", "man"]])
def test_tokenizer_from_vocabulary_refuses_repeats(tokens):
    with pytest.raises(ValueError, match=r"tokens: .*repeats \['(man|\[MASK\])'\]"):
        wordpiece_tokenizer_from_vocabulary(tokens)


def test_too_small_vocabulary_is_refused():
    # 5 special tokens, 25 characters (letters, "." and "-"), 18 of them also as "##" continuations
    with pytest.raises(ValueError, match="vocab_size: expected at least 48 .* got 47"):
        build_wordpiece_tokenizer(CAPTIONS, vocab_size=47)


def test_the_vocabulary_is_the_alphabet_then_the_most_frequent_words():
    tokenizer = build_wordpiece_tokenizer(["the dog, the cat", "a dog"], vocab_size=100)
    vocabulary = sorted(tokenizer.get_vocab(), key=tokenizer.get_vocab().get)

    alphabet = [",", "a", "c", "d", "e", "g", "h", "o", "t", "##a", "##e", "##g", "##h", "##o", "##t"]
    assert vocabulary == [*SPECIAL_TOKENS, *alphabet, "dog", "the", "cat"]  # "a" is already a character
    assert build_wordpiece_tokenizer(["a dog", "the dog, the cat"], vocab_size=100).get_vocab() == dict(
        tokenizer.get_vocab()
    )  # the order of the texts does not matter
    assert tokenizer.tokenize("the cog") == ["the", "c", "##o", "##g"]
