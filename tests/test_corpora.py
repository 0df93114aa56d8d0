"""`python -m lxmert_s_msp.data.corpora`: corpora built from tiny public-format files against a tiny feature
store."""

import json

import pytest
from datasets import load_from_disk
from tiny_store import OBJECT_VOCAB, write_tiny_store

from lxmert_s_msp.cli import run
from lxmert_s_msp.data.corpora import main
from lxmert_s_msp.data.corpus_builders import Corpus, caption_corpus, load_answer_vocab, save_corpus
from lxmert_s_msp.data.readers import Caption


@pytest.fixture
def store(tmp_path):
    return write_tiny_store(tmp_path / "store")


def test_cli_token_corpus_keeps_only_the_images_of_a_saved_corpus(store, tmp_path):
    captions = caption_corpus([Caption("COCO_val2014_000000000042", "a man", "mscoco")], store)
    save_corpus(captions, tmp_path / "captions")
    vocab = tmp_path / "objects_vocab.txt"
    vocab.write_text("\n".join(OBJECT_VOCAB) + "\n")
    argv = ["tokens", "--store", str(store.path), "--out", str(tmp_path / "t"), "--object-vocab", str(vocab)]
    main([*argv, "--images-of", str(tmp_path / "captions"), "--detector-classes", "4"])
    assert load_from_disk(str(tmp_path / "t"))["image_index"] == [2]


def test_cli_token_corpus_needs_a_name_for_every_class_of_the_detector(store, tmp_path, capsys):
    """objects_vocab.txt's line i names class i: one line missing shifts every later name, which no check of
    the ids can see while the store has no region of the last class."""
    vocab = tmp_path / "objects_vocab.txt"
    vocab.write_text("\n".join(OBJECT_VOCAB) + "\n")
    argv = ["tokens", "--store", str(store.path), "--out", str(tmp_path / "t"), "--object-vocab", str(vocab)]
    with pytest.raises(SystemExit):
        run(main, argv)  # bottom-up-attention's detector, of LXMERT's features and of faster_rcnn_vg: 1,600
    assert "objects_vocab.txt: 4 class names, but the detector has 1600 object" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(main, [*argv, "--detector-classes", "5"])
    assert "objects_vocab.txt: 4 class names, but the detector has 5 object" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
    main([*argv, "--detector-classes", "4"])
    assert load_from_disk(str(tmp_path / "t"))["text"][0] == "man tennis racket tree"


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
    assert "one of the arguments --answers --new-answer-vocab" in capsys.readouterr().err
    main([*common, "--out", str(val), *val_files, "--answers", str(train)])
    dataset = load_from_disk(str(val))
    assert dataset["answers"] == [["blue"], ["blue"], ["red"], []]  # "green" is not an answer the model has
    assert load_answer_vocab(val) == load_answer_vocab(train)

    # a vocabulary that knows none of the answers is an error, as is an empty one
    other = tmp_path / "other.json"
    other.write_text(json.dumps(["yes", "no"]))
    with pytest.raises(SystemExit):
        run(main, [*common, "--out", str(tmp_path / "v2"), *val_files, "--answers", str(other)])
    assert (
        "none of its 4 answered questions has an answer in the 2-answer vocabulary" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        run(
            main,
            [*common, "--out", str(tmp_path / "v3"), *val_files, "--new-answer-vocab", "--min-count", "9"],
        )
    assert "no answer is the answer of >= 9 questions" in capsys.readouterr().err
    other.write_text("[]")
    with pytest.raises(ValueError, match="other.json: the answer vocabulary is empty"):
        load_answer_vocab(other)
    assert not (tmp_path / "v2").exists() and not (tmp_path / "v3").exists()


def test_a_new_answer_vocabulary_from_questions_without_annotations_names_the_missing_flag(
    store, tmp_path, capsys
):
    """Questions alone (a test split's) have no answers to make a vocabulary of: the error was "no answer is
    the answer of >= 9 questions ... (lower --min-count, or give --answers)", not the missing flag."""
    files = _official_vqa(tmp_path, "test", {1: "red"})
    questions = [*files[:2], *files[4:]]  # --questions and --coco-split, no --annotations
    with pytest.raises(SystemExit):
        main(
            [
                "vqa",
                "--store",
                str(store.path),
                "--out",
                str(tmp_path / "t"),
                *questions,
                "--new-answer-vocab",
            ]
        )
    error = capsys.readouterr().err
    assert "vqa: --new-answer-vocab makes the vocabulary from the answers, and --questions without " in error
    assert (
        "--annotations have none: give --annotations (the official annotations json) per --questions" in error
    )
    assert not (tmp_path / "t").exists()


def test_cli_refuses_a_question_of_two_files_and_an_answer_listed_twice(store, tmp_path, capsys):
    first = _official_vqa(tmp_path, "a", {1: "red", 2: "blue"})
    second = _official_vqa(tmp_path, "b", {2: "red"})
    common = ["vqa", "--store", str(store.path), "--out", str(tmp_path / "v")]
    with pytest.raises(SystemExit):
        run(main, [*common, *first, *second, "--new-answer-vocab", "--min-count", "1"])
    assert (
        f"question_id 2 is the id of a record of {first[1]} and of {second[1]}: each question must be listed "
        "once" in capsys.readouterr().err
    )
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(["red", "blue", "red"]))
    with pytest.raises(SystemExit):
        run(main, [*common, *first, "--answers", str(answers)])
    repeated = "answers.json: answer vocabulary: 'red' is listed twice (entries 0 and 2)"
    assert repeated in capsys.readouterr().err
    assert not (tmp_path / "v").exists()


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
        run(main, argv)
    assert (
        "region_descriptions.json: image '77' (region_id 7) is not in the feature store"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "p").exists()
    # dropping the missing image leaves nothing: an error naming the input, not an empty corpus saved
    with pytest.raises(SystemExit):
        run(main, [*argv, "--drop-missing"])
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


def test_a_token_corpus_of_every_store_image_says_so(store, tmp_path, caplog):
    """Without --images-of the token stage would train on the downstream evaluation images too: said."""
    vocab = tmp_path / "objects_vocab.txt"
    vocab.write_text("\n".join(OBJECT_VOCAB) + "\n")
    argv = ["tokens", "--store", str(store.path), "--object-vocab", str(vocab), "--detector-classes", "4"]
    main([*argv, "--out", str(tmp_path / "t")])
    assert f"every one of the store's {len(store)} images gets a row" in caplog.text
