"""Corpora built from tiny public-format files and a tiny feature store (4 regions x 8 dims)."""

import json
import logging

import numpy as np
import pytest
from datasets import load_from_disk

from lxmert_s_msp.data.corpora import (
    Corpus,
    caption_corpus,
    flickr30k_dataset,
    load_answer_vocab,
    main,
    nlvr2_dataset,
    phrase_corpus,
    phrase_rows,
    qa_dataset,
    save_corpus,
    token_corpus,
)
from lxmert_s_msp.data.readers import Caption, Flickr30kImage, Nlvr2Pair, Question, RegionPhrase
from lxmert_s_msp.data.store import write_store
from lxmert_s_msp.data.tokenizer import wordpiece_tokenizer_from_vocabulary
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor

IMAGE_IDS = ["1", "2", "COCO_val2014_000000000042"]
OBJECT_VOCAB = ["man", "tennis racket", "car", "tree"]


@pytest.fixture
def store(tmp_path):
    num_images, num_regions = len(IMAGE_IDS), 4
    return write_store(
        tmp_path / "store",
        IMAGE_IDS,
        features=np.ones((num_images, num_regions, 8), np.float16),
        boxes=np.zeros((num_images, num_regions, 4), np.float32),
        object_ids=np.array([[0, 1, 3, -1], [2, 2, -1, -1], [3, 0, 1, 2]]),  # -1: padding regions
        object_confidences=np.ones((num_images, num_regions), np.float32),
        attribute_ids=np.zeros((num_images, num_regions), np.int64),
        attribute_confidences=np.ones((num_images, num_regions), np.float32),
        num_boxes=np.array([3, 2, 4]),
        image_sizes=np.full((num_images, 2), 100),
    )


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
    save_corpus(captions, tmp_path / "captions")
    vocab = tmp_path / "objects_vocab.txt"
    vocab.write_text("\n".join(OBJECT_VOCAB) + "\n")
    argv = ["tokens", "--store", str(store.path), "--out", str(tmp_path / "t"), "--object-vocab", str(vocab)]
    main([*argv, "--images-of", str(tmp_path / "captions")])
    assert load_from_disk(str(tmp_path / "t"))["image_index"] == [2]


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
    with caplog.at_level(logging.WARNING, logger="lxmert_s_msp.data.corpora"):
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


def test_qa_dataset_keeps_answers_of_the_vocabulary(store):
    records = [
        Question(
            "42000",
            "COCO_val2014_000000000042",
            "What color?",
            ["red", "blue", "teal"],
            [0.6, 0.3, 1.0],
            "teal",
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


def _official_vqa(tmp_path, name: str, answers: dict[int, str]) -> list[str]:
    """Official VQA v2 questions + annotations files (question id -> every human's answer) about the image
    COCO val2014 42, named after `name`; the `lxmert_s_msp.data.corpora vqa` arguments that read them."""
    split = "val2014"  # the store's one COCO image
    questions = tmp_path / f"v2_OpenEnded_mscoco_{name}_questions.json"
    questions.write_text(
        json.dumps(
            {"questions": [{"image_id": 42, "question": "What is it?", "question_id": q} for q in answers]}
        )
    )
    annotations = tmp_path / f"v2_mscoco_{name}_annotations.json"
    annotations.write_text(
        json.dumps(
            {
                "annotations": [
                    {
                        "question_id": question,
                        "image_id": 42,
                        "answers": [
                            {"answer": answer, "answer_confidence": "yes", "answer_id": i}
                            for i in range(1, 11)
                        ],
                        "multiple_choice_answer": answer,
                    }
                    for question, answer in answers.items()
                ]
            }
        )
    )
    return ["--questions", str(questions), "--annotations", str(annotations), "--coco-split", split]


def test_cli_builds_vqa_val_with_the_training_vocabulary(store, tmp_path, capsys):
    train, val = tmp_path / "vqa_train", tmp_path / "vqa_val"
    common = ["vqa", "--store", str(store.path)]
    train_files = _official_vqa(tmp_path, "train", {1: "red", 2: "red", 3: "blue", 4: "car"})
    main([*common, "--out", str(train), *train_files, "--new-answer-vocab", "--min-count", "1"])
    assert load_answer_vocab(train) == ["red", "blue", "car"]

    # val's own counts would keep only "blue"; the training vocabulary keeps every answer it knows
    val_files = _official_vqa(tmp_path, "val", {5: "blue", 6: "blue", 7: "red", 8: "green"})
    with pytest.raises(SystemExit):  # no vocabulary named: refused, not built from val's own counts
        main([*common, "--out", str(val), *val_files])
    assert "--answers --new-answer-vocab is required" in capsys.readouterr().err
    main([*common, "--out", str(val), *val_files, "--answers", str(train)])
    dataset = load_from_disk(str(val))
    assert dataset["answers"] == [["blue"], ["blue"], ["red"], []]  # "green" is not an answer the model has
    assert load_answer_vocab(val) == load_answer_vocab(train)

    # a vocabulary that knows none of the answers is an error, as is an empty one
    other = tmp_path / "other.json"
    other.write_text(json.dumps(["yes", "no"]))
    with pytest.raises(SystemExit):
        main([*common, "--out", str(tmp_path / "v2"), *val_files, "--answers", str(other)])
    assert (
        "none of its 4 answered questions has an answer in the 2-answer vocabulary" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main([*common, "--out", str(tmp_path / "v3"), *val_files, "--new-answer-vocab", "--min-count", "9"])
    assert "no answer is the answer of >= 9 questions" in capsys.readouterr().err
    other.write_text("[]")
    with pytest.raises(ValueError, match="other.json: the answer vocabulary is empty"):
        load_answer_vocab(other)
    assert not (tmp_path / "v2").exists() and not (tmp_path / "v3").exists()


def test_cli_reports_missing_image_with_file_and_record(store, tmp_path, capsys):
    regions = tmp_path / "region_descriptions.json"
    regions.write_text(
        json.dumps([{"id": 77, "regions": [{"region_id": 7, "image_id": 77, "phrase": "red car"}]}])
    )
    argv = [
        "phrases",
        "--store",
        str(store.path),
        "--out",
        str(tmp_path / "p"),
        "--region-descriptions",
        str(regions),
    ]
    with pytest.raises(SystemExit):
        main(argv)
    assert (
        "region_descriptions.json: image '77' (region_id 7) is not in the feature store"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "p").exists()
    # dropping the missing image leaves nothing: an error naming the input, not an empty corpus saved
    with pytest.raises(SystemExit):
        main([*argv, "--drop-missing"])
    assert (
        "region_descriptions.json: no phrases rows (1 records dropped because their image is not in the "
        "store)" in capsys.readouterr().err
    )
    assert not (tmp_path / "p").exists()
    regions.write_text(
        json.dumps(
            [
                {"id": 1, "regions": [{"region_id": 8, "image_id": 1, "phrase": "red car"}]},
                *json.loads(regions.read_text()),
            ]
        )
    )
    corpus = main([*argv, "--drop-missing"])
    assert isinstance(corpus, Corpus) and corpus.dropped == 1
    assert load_from_disk(str(tmp_path / "p"))["phrases"] == [["red car"]]
