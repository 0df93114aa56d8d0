"""Corpora built from plain records and a tiny feature store (4 regions x 8 dims)."""

import logging

import pytest
from datasets import load_from_disk
from tiny_store import IMAGE_IDS, OBJECT_VOCAB, write_tiny_store

from lxmert_s_msp.data.corpus_builders import (
    caption_corpus,
    flickr30k_dataset,
    load_answer_vocab,
    nlvr2_dataset,
    phrase_corpus,
    phrase_rows,
    qa_dataset,
    save_corpus,
    token_corpus,
)
from lxmert_s_msp.data.readers import Caption, Flickr30kImage, Nlvr2Pair, Question, RegionPhrase
from lxmert_s_msp.data.tokenizer import wordpiece_tokenizer_from_vocabulary
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor


@pytest.fixture
def store(tmp_path):
    return write_tiny_store(tmp_path / "store")


def test_token_corpus_names_valid_objects_in_order(store):
    dataset = token_corpus(store, OBJECT_VOCAB).dataset
    assert dataset.to_dict() == {
        "image_id": IMAGE_IDS,
        "image_index": [0, 1, 2],
        "text": ["man tennis racket tree", "car car", "tree man tennis racket car"],
    }


def test_token_corpus_can_keep_only_the_images_of_a_caption_corpus(store, tmp_path):
    captions = caption_corpus([Caption("COCO_val2014_000000000042", "a man", "mscoco")], store)
    dataset = token_corpus(store, OBJECT_VOCAB, captions.dataset["image_id"]).dataset
    assert dataset.to_dict() == {
        "image_id": ["COCO_val2014_000000000042"],
        "image_index": [2],
        "text": ["tree man tennis racket car"],
    }


def test_token_corpus_object_id_outside_vocab_names_image_region_field(store):
    with pytest.raises(
        ValueError, match=r"store: image '1' region 2: field 'object_ids' is 3, outside the 3-class"
    ):
        token_corpus(store, OBJECT_VOCAB[:3])


def phrases(*triples):
    return [RegionPhrase(image, str(region), phrase) for image, region, phrase in triples]


def test_phrase_corpus_drops_verb_phrases_and_dedupes(store):
    records = phrases(
        ("1", 11, "Green old car."),
        ("1", 12, "man riding a bike"),
        ("1", 13, "white clouds in blue sky"),
        ("1", 14, "green old car"),
        ("1", 15, "  "),
        ("2", 21, "a man is standing"),
        ("COCO_val2014_000000000042", 31, "clock on the tower"),
    )
    corpus = phrase_corpus(records, store)
    assert corpus.dropped == 0
    assert corpus.dataset.to_dict() == {
        "image_id": ["1", "COCO_val2014_000000000042"],
        "image_index": [0, 2],
        "phrases": [["Green old car", "white clouds in blue sky"], ["clock on the tower"]],
    }


def test_phrase_rows_pack_whole_phrases_into_texts_that_fit(store):
    words = ["a", "red", "car", "blue", "sky", "old", "tall", "tree", "man", "##ly", ","]
    processor = LxmertSProcessor(wordpiece_tokenizer_from_vocabulary(words), max_length=8)
    images = phrase_corpus(
        phrases(
            ("1", 1, "red car"),  # 2 tokens
            ("1", 2, "blue sky"),  # + comma + 2 = 5
            ("1", 3, "a tall tree"),  # + comma + 3 = 9 > 6: a new text
            ("1", 4, "manly"),  # + comma + 2 = 6: fits
            ("2", 5, "a red car a blue sky a tree"),  # 8 tokens alone: longer than a whole text
            ("2", 6, "old man"),
        ),
        store,
    ).dataset

    rows = phrase_rows(images, processor)

    assert rows.to_dict() == {
        "image_id": ["1", "1", "2", "2"],
        "image_index": [0, 0, 1, 1],
        "text": ["red car, blue sky", "a tall tree, manly", "a red car a blue sky a tree", "old man"],
    }
    lengths = processor.text_lengths(rows["text"])
    assert lengths.tolist() == [7, 8, 10, 4]  # only the one phrase longer than a text is cut


def test_phrase_of_missing_image_is_named(store):
    records = phrases(("1", 11, "red car"), ("99", 991, "blue sky"))
    with pytest.raises(KeyError, match=r"region_descriptions.json: image '99' \(region_id 991\) is not in"):
        phrase_corpus(records, store, origin="region_descriptions.json")


def test_phrase_corpus_drop_missing_counts_and_logs_dropped_phrases(store, caplog):
    records = phrases(("1", 11, "red car"), ("99", 991, "blue sky"), ("99", 992, "dog running"))
    with caplog.at_level(logging.WARNING, logger="lxmert_s_msp.data.corpus_builders"):
        corpus = phrase_corpus(records, store, drop_missing=True)
    assert corpus.dropped == 2
    assert corpus.dataset["image_id"] == ["1"]
    assert "dropped 1 of 2 images" in caplog.text


def test_caption_corpus_keeps_source_and_reports_missing(store):
    records = [
        Caption("1", "a man with a racket", "mscoco"),
        Caption("404", "nothing here", "vg"),
        Caption("2", "two cars", "vg"),
    ]
    with pytest.raises(
        KeyError,
        match=r"mscoco_train.json: caption of image '404': 'nothing here' is not in the feature store",
    ):
        caption_corpus(records, store, origin="mscoco_train.json")
    corpus = caption_corpus(records, store, drop_missing=True)
    assert corpus.dropped == 1
    assert corpus.dataset.to_dict() == {
        "image_id": ["1", "2"],
        "image_index": [0, 1],
        "text": ["a man with a racket", "two cars"],
        "source": ["mscoco", "vg"],
    }


def test_texts_with_no_word_are_dropped_counted_and_the_first_named(store, caplog):
    """An empty caption, question or statement trains only [CLS] [SEP] and scores as a query that matches
    nothing: each is left out, counted in `empty` and logged with the first of them."""
    captions = [Caption("1", "a man", "mscoco"), Caption("2", "  ", "mscoco"), Caption("1", "", "vg")]
    with caplog.at_level(logging.WARNING):
        corpus = caption_corpus(captions, store, origin="captions.json")
    assert corpus.dataset["text"] == ["a man"] and corpus.empty == 2
    assert (
        "captions.json: dropped 2 of 3 captions with no word (the first: record 1, image '2')" in caplog.text
    )
    questions = [Question(str(i), "2", text, ["yes"], [1.0], "yes") for i, text in ((7, " "), (8, "Is it?"))]
    corpus = qa_dataset(questions, store, ["yes"], origin="train.json")
    assert corpus.dataset["question_id"] == ["8"] and corpus.empty == 1
    assert "train.json: dropped 1 of 2 questions with no word (the first: question_id 7" in caplog.text
    pairs = [Nlvr2Pair("dev-1-0-0", ("1", "2"), "", 1), Nlvr2Pair("dev-2-0-0", ("1", "2"), "two cars", 0)]
    corpus = nlvr2_dataset(pairs, store, origin="dev.json")
    assert corpus.dataset["identifier"] == ["dev-2-0-0"] and corpus.empty == 1
    images = [Flickr30kImage("1", ["a man", " "], "test"), Flickr30kImage("2", ["two cars"], "test")]
    corpus = flickr30k_dataset(images, store, origin="karpathy.json")
    assert corpus.dataset["captions"] == [["a man"], ["two cars"]] and corpus.empty == 1


def test_a_retrieval_image_without_a_caption_is_refused(store):
    images = [Flickr30kImage("1", ["a man"], "test"), Flickr30kImage("2", ["", " "], "test")]
    with pytest.raises(ValueError, match=r"karpathy.json: image '2' \(split 'test'\) has no caption"):
        flickr30k_dataset(images, store, origin="karpathy.json")


def test_question_ids_and_answers_given_twice_are_refused(store):
    records = [Question(str(i), "2", "Is it?", ["yes"], [1.0], "yes") for i in (7, 8, 7)]
    with pytest.raises(ValueError, match=r"train.json: question_id 7 is the id of records 0 and 2"):
        qa_dataset(records, store, ["yes", "no"], origin="train.json")
    with pytest.raises(ValueError, match=r"answer vocabulary: 'yes' is listed twice \(entries 0 and 2\)"):
        qa_dataset(records[:2], store, ["yes", "no", "yes"], origin="train.json")


def test_qa_dataset_keeps_answers_of_the_vocabulary(store):
    records = [
        Question(
            "42000",
            "COCO_val2014_000000000042",
            "What color?",
            ["red", "blue", "teal"],
            [0.6, 0.3, 1.0],
            "teal",
            "what color",
        ),
        Question("7", "2", "Is it?", [], [], None),
    ]
    corpus = qa_dataset(records, store, ["red", "blue", "yes"])
    assert corpus.answer_vocab == ["red", "blue", "yes"]
    row = corpus.dataset[0]
    assert (row["question_id"], row["image_id"], row["image_index"]) == (
        "42000",
        "COCO_val2014_000000000042",
        2,
    )
    assert row["answers"] == ["red", "blue"]
    assert row["scores"] == pytest.approx([0.6, 0.3])
    assert corpus.dataset[1]["answers"] == [] and corpus.dataset[1]["scores"] == []
    assert list(corpus.dataset["question_type"]) == ["what color", None]  # GQA's questions have none


def test_qa_question_of_missing_image_is_named(store):
    records = [Question("5", "COCO_val2014_000000000005", "q", [], [], None)]
    with pytest.raises(KeyError, match=r"minival.json: question_id 5 \(image 'COCO_val2014_000000000005'\)"):
        qa_dataset(records, store, [], origin="minival.json")


def test_nlvr2_dataset_points_at_both_images(store):
    records = [Nlvr2Pair("dev-1-0-0", ("1", "2"), "two cars", 1), Nlvr2Pair("dev-2-0-0", ("2", "x"), "s", 0)]
    with pytest.raises(KeyError, match=r"valid.json: identifier dev-2-0-0 \(image 'x'\)"):
        nlvr2_dataset(records, store, origin="valid.json")
    corpus = nlvr2_dataset(records, store, drop_missing=True)
    assert corpus.dropped == 1
    assert corpus.dataset.to_dict() == {
        "identifier": ["dev-1-0-0"],
        "image_ids": [["1", "2"]],
        "image_indices": [[0, 1]],
        "sentence": ["two cars"],
        "label": [1],
    }


def test_flickr30k_split_whose_images_are_all_missing_is_an_error(store):
    images = [Flickr30kImage("2", ["a car"], "train"), Flickr30kImage("404", ["a dog"], "test")]
    with pytest.raises(ValueError, match="karpathy.json: every image of split 'test' is missing"):
        flickr30k_dataset(images, store, drop_missing=True, origin="karpathy.json")


def test_flickr30k_dataset(store):
    corpus = flickr30k_dataset([Flickr30kImage("2", ["a car", "cars"], "test")], store)
    assert corpus.dataset.to_dict() == {
        "image_id": ["2"],
        "image_index": [1],
        "captions": [["a car", "cars"]],
        "split": ["test"],
    }


def test_save_corpus_round_trip_and_refuses_to_overwrite(store, tmp_path):
    records = [Question("1", "1", "q", ["yes"], [1.0], "yes")]
    out = save_corpus(qa_dataset(records, store, ["yes", "no"]), tmp_path / "vqa")
    reloaded = load_from_disk(str(out))
    assert reloaded.to_dict() == qa_dataset(records, store, ["yes", "no"]).dataset.to_dict()
    assert load_answer_vocab(out) == ["yes", "no"]
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []
    with pytest.raises(FileExistsError, match="vqa exists"):
        save_corpus(caption_corpus([], store), out)
    with pytest.raises(ValueError, match="the corpus has no rows"):
        save_corpus(caption_corpus([], store), tmp_path / "empty")
    assert not (tmp_path / "empty").exists()
    save_corpus(caption_corpus([Caption("2", "cars", "vg")], store), out, overwrite=True)
    assert load_from_disk(str(out))["text"] == ["cars"]
    assert not (out / "answers.json").exists()
