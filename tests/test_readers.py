"""Readers against tiny files written in each exact public format."""

import json
import pickle

import numpy as np
import pytest
from region_files import FEATURE_DIM, LABEL_FIELDS, corrupt, make_image, write_npz, write_tsv

from lxmert_s_msp.data.readers import (
    BadRecordError,
    Caption,
    Flickr30kImage,
    Nlvr2Pair,
    Question,
    RegionPhrase,
    build_answer_vocab,
    read_class_vocab,
    read_coco_captions,
    read_flickr30k_karpathy,
    read_lxmert_nlvr2_json,
    read_lxmert_pretrain_json,
    read_lxmert_qa_json,
    read_npz_features,
    read_obj36_tsv,
    read_vg_region_descriptions,
    read_vqa_official,
    vqa_soft_scores,
)


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def test_class_vocab_takes_first_synonym_and_keeps_multi_word_names(tmp_path):
    path = tmp_path / "objects_vocab.txt"
    path.write_text("yolk\ntennis racket,tennis racquet\n  man \nt-shirt,tee shirt\n")
    assert read_class_vocab(path) == ["yolk", "tennis racket", "man", "t-shirt"]


def test_class_vocab_empty_line_names_file_and_line(tmp_path):
    path = tmp_path / "attributes_vocab.txt"
    path.write_text("white\n\nblack\n")
    with pytest.raises(ValueError, match=r"attributes_vocab.txt: line 2: field 'class name'"):
        read_class_vocab(path)


BOM = "\ufeff"  # the byte-order mark Notepad and Excel put at the start of a UTF-8 file


def test_a_byte_order_mark_is_not_part_of_the_first_record(tmp_path):
    vocab = tmp_path / "objects_vocab.txt"
    vocab.write_text(f"{BOM}yolk\nman\n", encoding="utf-8")
    assert read_class_vocab(vocab) == ["yolk", "man"]
    captions = write_json(tmp_path / "captions.json", {"images": [], "annotations": []})
    captions.write_text(BOM + captions.read_text(), encoding="utf-8")
    assert read_coco_captions(captions) == []
    tsv = write_tsv(
        tmp_path / "a_obj36.tsv", [make_image("COCO_1", 3, seed=0), make_image("COCO_2", 3, seed=1)]
    )
    tsv.write_bytes(BOM.encode("utf-8") + tsv.read_bytes())
    assert [record.image_id for record in read_obj36_tsv(tsv)] == ["COCO_1", "COCO_2"]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        read_coco_captions(tmp_path / "nothere.json")


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n{"img_id": "1",\n')
    with pytest.raises(ValueError, match=r"broken.json: invalid JSON at line 3"):
        read_lxmert_nlvr2_json(path)


def region(region_id, image_id, phrase):
    return {
        "region_id": region_id,
        "image_id": image_id,
        "phrase": phrase,
        "x": 1,
        "y": 2,
        "width": 3,
        "height": 4,
    }


def test_vg_region_descriptions_accepts_id_and_image_id(tmp_path):
    path = write_json(
        tmp_path / "region_descriptions.json",
        [
            {"id": 1, "regions": [region(11, 1, "green old car"), region(12, 1, "man riding a bike")]},
            {"image_id": 2, "regions": [region(21, 2, "clock on the tower")]},
        ],
    )
    assert read_vg_region_descriptions(path) == [
        RegionPhrase("1", "11", "green old car"),
        RegionPhrase("1", "12", "man riding a bike"),
        RegionPhrase("2", "21", "clock on the tower"),
    ]


def test_vg_region_missing_phrase_names_file_image_region_and_field(tmp_path):
    bad = region(12, 1, "x")
    del bad["phrase"]
    path = write_json(
        tmp_path / "region_descriptions.json", [{"id": 1, "regions": [region(11, 1, "a"), bad]}]
    )
    with pytest.raises(
        KeyError,
        match=r"region_descriptions.json: record 0 \(image 1\) region 1 \(region_id 12\): field 'phrase'",
    ):
        read_vg_region_descriptions(path)


def test_vg_region_of_another_image_is_an_error(tmp_path):
    path = write_json(tmp_path / "rd.json", [{"id": 1, "regions": [region(11, 7, "a")]}])
    with pytest.raises(ValueError, match=r"region_id 11\): field 'image_id' is 7"):
        read_vg_region_descriptions(path)


def coco_file(tmp_path, annotations):
    images = [
        {"id": 57870, "file_name": "COCO_train2014_000000057870.jpg", "height": 480, "width": 640},
        {"id": 384029, "file_name": "COCO_train2014_000000384029.jpg", "height": 429, "width": 640},
    ]
    return write_json(
        tmp_path / "captions_train2014.json", {"info": {}, "images": images, "annotations": annotations}
    )


def test_coco_captions_use_file_name_stem_as_image_id(tmp_path):
    path = coco_file(
        tmp_path,
        [
            {"image_id": 57870, "id": 787980, "caption": "A very clean and well decorated empty bathroom\n"},
            {"image_id": 384029, "id": 789366, "caption": "A man  standing next to a bike."},
        ],
    )
    assert read_coco_captions(path) == [
        Caption("COCO_train2014_000000057870", "A very clean and well decorated empty bathroom", "mscoco"),
        Caption("COCO_train2014_000000384029", "A man standing next to a bike.", "mscoco"),
    ]


def test_coco_caption_of_unknown_image_names_annotation(tmp_path):
    path = coco_file(tmp_path, [{"image_id": 5, "id": 42, "caption": "x"}])
    with pytest.raises(ValueError, match=r"annotations\[0\] \(id 42\): field 'image_id' 5"):
        read_coco_captions(path)


def test_coco_caption_of_wrong_type_names_field(tmp_path):
    path = coco_file(tmp_path, [{"image_id": 57870, "id": 42, "caption": 7}])
    with pytest.raises(
        ValueError, match=r"captions_train2014.json: annotations\[0\] \(id 42\): field 'caption' must be str"
    ):
        read_coco_captions(path)


def lxmert_pretrain_file(tmp_path):
    return write_json(
        tmp_path / "mscoco_train.json",
        [
            {
                "img_id": "COCO_train2014_000000318556",
                "labelf": {"vqa": [{"yes": 1.0}]},
                "sentf": {"mscoco": ["a cat on a mat", "a sleeping cat"], "vqa": ["is the cat asleep?"]},
            },
            {"img_id": "2345", "labelf": {}, "sentf": {"vg": ["man riding a bike"], "mscoco": []}},
        ],
    )


def test_lxmert_pretrain_json_keeps_chosen_sources_in_file_order(tmp_path):
    path = lxmert_pretrain_file(tmp_path)
    assert read_lxmert_pretrain_json(path, ["mscoco", "vg"]) == [
        Caption("COCO_train2014_000000318556", "a cat on a mat", "mscoco"),
        Caption("COCO_train2014_000000318556", "a sleeping cat", "mscoco"),
        Caption("2345", "man riding a bike", "vg"),
    ]


def test_lxmert_pretrain_json_unknown_source_lists_available(tmp_path):
    path = lxmert_pretrain_file(tmp_path)
    with pytest.raises(
        ValueError, match=r"unknown sources \['coco'\]; the file has \['mscoco', 'vg', 'vqa'\]"
    ):
        read_lxmert_pretrain_json(path, ["coco"])


def test_lxmert_pretrain_json_bad_sentence_list_names_record(tmp_path):
    path = write_json(tmp_path / "p.json", [{"img_id": "9", "labelf": {}, "sentf": {"mscoco": "not a list"}}])
    with pytest.raises(
        ValueError, match=r"p.json: record 0 \(img_id 9\) field 'sentf': field 'mscoco' must be list"
    ):
        read_lxmert_pretrain_json(path, ["mscoco"])


def test_vqa_soft_scores_are_the_leave_one_out_accuracy():
    # "a" given by 2 of 10: dropping one of its 2 annotators (2 subsets) leaves 1 match -> 1/3,
    # dropping any of the other 8 leaves 2 matches -> 2/3: (2 * 1/3 + 8 * 2/3) / 10 = 0.6.
    # "b" by 3: (3 * 2/3 + 7 * 1) / 10 = 0.9.  "c" by 1: (1 * 0 + 9 * 1/3) / 10 = 0.3.  "d" by 4: 1.0.
    scores = vqa_soft_scores(["a", "a", "b", "b", "b", "c", "d", "d", "d", "d"])
    assert scores == pytest.approx({"a": 0.6, "b": 0.9, "c": 0.3, "d": 1.0})
    assert vqa_soft_scores(["yes"] * 10) == {"yes": 1.0}


def vqa_answers(*given):
    return [
        {"answer": answer, "answer_confidence": "yes", "answer_id": i + 1} for i, answer in enumerate(given)
    ]


def write_vqa(tmp_path, annotations):
    questions = write_json(
        tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json",
        {
            "info": {},
            "task_type": "Open-Ended",
            "questions": [
                {"image_id": 42, "question": "What color is the car?", "question_id": 42000},
                {"image_id": 73, "question": "Is it raining?", "question_id": 73001},
            ],
        },
    )
    annotations_path = write_json(
        tmp_path / "v2_mscoco_val2014_annotations.json", {"annotations": annotations}
    )
    return questions, annotations_path


def vqa_annotation(question_id, image_id, given, majority, question_type="what color"):
    return {
        "question_id": question_id,
        "image_id": image_id,
        "question_type": question_type,
        "answer_type": "other",
        "answers": vqa_answers(*given),
        "multiple_choice_answer": majority,
    }


def test_vqa_official_normalises_answers_scores_them_and_maps_image_ids(tmp_path):
    questions, annotations = write_vqa(
        tmp_path,
        [
            vqa_annotation(42000, 42, ["Red", "red ", "blue"] + ["green"] * 7, "green"),
            vqa_annotation(73001, 73, ["no"] * 10, "no", "is it"),
        ],
    )
    records = read_vqa_official(questions, annotations, "val2014")
    assert records[0].question_id == "42000"
    assert records[0].image_id == "COCO_val2014_000000000042"
    assert records[0].question == "What color is the car?"
    assert records[0].answer == "green"
    assert dict(zip(records[0].answers, records[0].scores, strict=True)) == pytest.approx(
        {"red": 0.6, "blue": 0.3, "green": 1.0}
    )
    assert records[1] == Question(
        "73001", "COCO_val2014_000000000073", "Is it raining?", ["no"], [1.0], "no", "is it", "other"
    )
    assert records[0].question_type == "what color"  # what the answer prior by question type groups by


def test_vqa_official_without_annotations_has_no_answers(tmp_path):
    questions, _ = write_vqa(tmp_path, [])
    records = read_vqa_official(questions, None, "test2015")
    assert [(r.image_id, r.answers, r.scores, r.answer) for r in records] == [
        ("COCO_test2015_000000000042", [], [], None),
        ("COCO_test2015_000000000073", [], [], None),
    ]


def test_vqa_official_question_without_annotation_is_named(tmp_path):
    questions, annotations = write_vqa(tmp_path, [vqa_annotation(42000, 42, ["red"] * 10, "red")])
    with pytest.raises(KeyError, match=r"annotations.json: no annotation for question_id 73001"):
        read_vqa_official(questions, annotations, "val2014")


def test_vqa_official_answer_of_wrong_type_names_field(tmp_path):
    annotation = vqa_annotation(42000, 42, ["red"] * 10, "red")
    annotation["answers"][3]["answer"] = 3
    questions, annotations = write_vqa(tmp_path, [annotation])
    with pytest.raises(
        ValueError, match=r"annotations\[0\] \(question_id 42000\) answers\[3\]: field 'answer'"
    ):
        read_vqa_official(questions, annotations, "val2014")


def test_vqa_official_image_mismatch_is_an_error(tmp_path):
    questions, annotations = write_vqa(
        tmp_path,
        [vqa_annotation(42000, 41, ["red"] * 10, "red"), vqa_annotation(73001, 73, ["no"] * 10, "no")],
    )
    with pytest.raises(ValueError, match=r"question_id 42000: field 'image_id' is 41"):
        read_vqa_official(questions, annotations, "val2014")


def test_lxmert_vqa_json(tmp_path):
    path = write_json(
        tmp_path / "minival.json",
        [
            {
                "answer_type": "other",
                "img_id": "COCO_val2014_000000393267",
                "label": {"discus": 0.3, "frisbee": 1.0},
                "question_id": 393267002,
                "question_type": "what is the",
                "sent": "What is the man throwing?",
            },
            {"img_id": "COCO_test2015_000000000001", "question_id": 1000, "sent": "Is it sunny?"},
        ],
    )
    assert read_lxmert_qa_json(path) == [
        Question(
            "393267002",
            "COCO_val2014_000000393267",
            "What is the man throwing?",
            ["discus", "frisbee"],
            [0.3, 1.0],
            "frisbee",
            "what is the",
            "other",
        ),
        Question("1000", "COCO_test2015_000000000001", "Is it sunny?", [], [], None),  # no type given
    ]


def test_lxmert_gqa_json_with_string_ids(tmp_path):
    path = write_json(
        tmp_path / "testdev.json",
        [{"img_id": "n161313", "label": {"yes": 1.0}, "question_id": "201307251", "sent": "Is it a shoe?"}],
    )
    assert read_lxmert_qa_json(path) == [
        Question("201307251", "n161313", "Is it a shoe?", ["yes"], [1.0], "yes")
    ]


@pytest.mark.parametrize("score", [1.5, float("nan"), "1", True])
def test_lxmert_label_score_must_be_in_unit_interval(tmp_path, score):
    path = write_json(
        tmp_path / "train.json", [{"img_id": "n1", "label": {"yes": score}, "question_id": "7", "sent": "?"}]
    )
    with pytest.raises(ValueError, match=r"train.json: record 0 \(question_id 7\): field 'label'\['yes'\]"):
        read_lxmert_qa_json(path)


def test_a_question_id_given_twice_is_named_with_both_records(tmp_path):
    question = {"img_id": "n1", "label": {"yes": 1.0}, "question_id": "7", "sent": "Is it?"}
    path = write_json(tmp_path / "train.json", [question, {**question, "question_id": "8"}, question])
    with pytest.raises(
        ValueError, match=r"train.json: record 2 \(question_id 7\): the question_id of record 0"
    ):
        read_lxmert_qa_json(path)
    questions, annotations = write_vqa(
        tmp_path,
        [
            vqa_annotation(42000, 42, ["red"] * 10, "red"),
            vqa_annotation(73001, 73, ["no"] * 10, "no"),
            vqa_annotation(42000, 42, ["blue"] * 10, "blue"),
        ],
    )
    with pytest.raises(
        ValueError,
        match=r"annotations.json: annotations\[2\] \(question_id 42000\): the question_id of annotations\[0",
    ):
        read_vqa_official(questions, annotations, "val2014")
    data = json.loads(questions.read_text())
    data["questions"].append(data["questions"][0])
    questions.write_text(json.dumps(data))
    with pytest.raises(
        ValueError,
        match=r"questions.json: questions\[2\] \(question_id 42000\): the question_id of questions\[0\]",
    ):
        read_vqa_official(questions, None, "val2014")


def test_lxmert_question_missing_sentence_names_field(tmp_path):
    path = write_json(tmp_path / "val.json", [{"img_id": "n1", "question_id": "7"}])
    with pytest.raises(KeyError, match=r"val.json: record 0 \(question_id 7\): field 'sent' is missing"):
        read_lxmert_qa_json(path)


def test_answer_vocab_keeps_frequent_answers_by_count():
    records = [
        Question(str(i), "img", "q", [], [], answer)
        for i, answer in enumerate(["yes"] * 3 + ["no"] * 2 + ["2"])
    ]
    records.append(Question("x", "img", "q", [], [], None))
    assert build_answer_vocab(records, min_count=2) == ["yes", "no"]
    assert build_answer_vocab(records, min_count=1) == ["yes", "no", "2"]


def test_lxmert_nlvr2_json(tmp_path):
    path = write_json(
        tmp_path / "valid.json",
        [
            {
                "identifier": "dev-850-0-0",
                "img0": "dev-850-0-img0",
                "img1": "dev-850-0-img1",
                "label": 0,
                "sent": "There are two dogs.",
                "uid": "nlvr2_dev_0",
            }
        ],
    )
    assert read_lxmert_nlvr2_json(path) == [
        Nlvr2Pair("dev-850-0-0", ("dev-850-0-img0", "dev-850-0-img1"), "There are two dogs.", 0)
    ]


@pytest.mark.parametrize("label", [2, "True", True])
def test_lxmert_nlvr2_label_must_be_zero_or_one(tmp_path, label):
    path = write_json(
        tmp_path / "train.json",
        [{"identifier": "train-1-0-0", "img0": "a", "img1": "b", "label": label, "sent": "s", "uid": "u"}],
    )
    with pytest.raises(ValueError, match=r"train.json: record 0 \(identifier train-1-0-0\): field 'label'"):
        read_lxmert_nlvr2_json(path)


def test_flickr30k_karpathy(tmp_path):
    sentences = [{"raw": "Two young guys with shaggy hair.", "tokens": ["two"], "imgid": 0, "sentid": 0}]
    path = write_json(
        tmp_path / "dataset_flickr30k.json",
        {
            "dataset": "flickr30k",
            "images": [
                {
                    "filename": "1000092795.jpg",
                    "imgid": 0,
                    "split": "train",
                    "sentences": sentences,
                    "sentids": [0],
                },
                {"filename": "1007129816.jpg", "imgid": 1, "split": "test", "sentences": [], "sentids": []},
            ],
        },
    )
    assert read_flickr30k_karpathy(path) == [
        Flickr30kImage("1000092795", ["Two young guys with shaggy hair."], "train"),
        Flickr30kImage("1007129816", [], "test"),
    ]


def test_flickr30k_sentence_without_raw_names_image(tmp_path):
    path = write_json(
        tmp_path / "dataset_flickr30k.json",
        {"images": [{"filename": "1.jpg", "imgid": 0, "split": "val", "sentences": [{"tokens": []}]}]},
    )
    with pytest.raises(
        KeyError, match=r"images\[0\] \(filename 1.jpg\) sentences\[0\]: field 'raw' is missing"
    ):
        read_flickr30k_karpathy(path)


def karpathy_image(filename, split, *sentences):
    return {
        "filename": filename,
        "imgid": 0,
        "split": split,
        "sentences": [{"raw": raw, "tokens": raw.split()} for raw in sentences],
    }


def test_flickr30k_filename_given_twice_is_named_with_both_entries(tmp_path):
    images = [karpathy_image("1.jpg", "test", "a dog"), karpathy_image("2.jpg", "test", "a cat")]
    path = write_json(tmp_path / "dataset_flickr30k.json", {"images": [*images, images[0]]})
    with pytest.raises(
        ValueError, match=r"images\[2\] \(filename 1.jpg\): the same image \('1'\) as images\[0\] again"
    ):
        read_flickr30k_karpathy(path)


@pytest.mark.parametrize("split", ["TEST", "Train", " val"])
def test_flickr30k_split_names_in_another_case_are_refused(tmp_path, split):
    images = [karpathy_image("1.jpg", "test", "a dog"), karpathy_image("2.jpg", split, "a cat")]
    path = write_json(tmp_path / "dataset_flickr30k.json", {"images": images})
    written = split.strip().lower()
    with pytest.raises(
        ValueError,
        match=rf"images\[1\] \(filename 2.jpg\): field 'split' is '{split}', write it '{written}'",
    ):
        read_flickr30k_karpathy(path)


@pytest.mark.parametrize(
    "reader, name",
    [
        (read_coco_captions, "captions_train2014.json"),
        (read_lxmert_qa_json, "minival.json"),
        (read_class_vocab, "objects_vocab.txt"),
    ],
)
def test_a_byte_that_is_not_utf8_is_named_with_file_line_and_offset(tmp_path, reader, name):
    path = tmp_path / name
    path.write_bytes(b'[\n  "caf\xe9"\n]')  # Latin-1, as an editor on Windows might save it
    with pytest.raises(ValueError) as error:
        reader(path)
    assert f"{name}: line 2, byte offset 8: byte b'\\xe9' is not UTF-8" in str(error.value)


# ---- region features -------------------------------------------------------------------------------


def test_obj36_reader_round_trips_every_field(tmp_path):
    images = [make_image("COCO_1", 3, seed=0), make_image("COCO_2", 36, seed=1)]
    records = list(read_obj36_tsv(write_tsv(tmp_path / "a_obj36.tsv", images)))

    assert [record.image_id for record in records] == ["COCO_1", "COCO_2"]
    for record, image in zip(records, images, strict=True):
        assert (record.height, record.width) == (100, 200)
        assert record.features.shape == (image["num_boxes"], FEATURE_DIM)  # dim inferred from the bytes
        np.testing.assert_array_equal(record.features, image["features"].astype(np.float32))
        np.testing.assert_array_equal(record.boxes, image["boxes"].astype(np.float32))
        np.testing.assert_array_equal(record.object_ids, image["objects_id"])
        np.testing.assert_array_equal(record.attribute_confidences, image["attrs_conf"].astype(np.float32))
        assert record.location.endswith(f"line {records.index(record) + 1}")


def test_row_with_missing_fields_is_named(tmp_path):
    path = tmp_path / "cut.tsv"
    write_tsv(path, [make_image("a", 3, seed=0)])
    with open(path, "a") as handle:
        handle.write("b\t100\t200\n")
    with pytest.raises(BadRecordError, match=r"cut.tsv, line 2, field 'row': 3 tab-separated fields"):
        list(read_obj36_tsv(path))


def test_reader_checks_the_feature_dim_it_is_given(tmp_path):
    path = write_tsv(tmp_path / "a.tsv", [make_image("a", 3, seed=0)])
    with pytest.raises(BadRecordError, match=r"line 1, field 'features': 192 bytes, expected 96"):
        list(read_obj36_tsv(path, feature_dim=FEATURE_DIM // 2))


@pytest.mark.parametrize(
    "keys", [("x", "bbox", "image_h", "image_w"), ("features", "boxes", "image_height", "image_width")]
)
def test_npz_reader_accepts_the_common_key_names(tmp_path, keys):
    image = make_image("123", 4, seed=0)
    record = read_npz_features(write_npz(tmp_path / "123.npz", image, keys), feature_dim=FEATURE_DIM)
    assert (record.image_id, record.height, record.width) == ("123", 100, 200)
    np.testing.assert_allclose(record.features, image["features"], rtol=1e-6)
    np.testing.assert_array_equal(record.attribute_ids, image["attrs_id"])


def test_npz_labels_in_pickled_info_need_allow_pickle(tmp_path):
    image = make_image("7", 4, seed=0)
    info = {name: image[name] for name in LABEL_FIELDS}
    path = write_npz(tmp_path / "7.npz", image, labels=False, info=np.array(info, dtype=object))
    with pytest.raises(BadRecordError, match=r"7.npz, field 'info': .*--allow-pickle"):
        read_npz_features(path)
    np.testing.assert_array_equal(read_npz_features(path, allow_pickle=True).object_ids, image["objects_id"])


def test_npz_without_labels_gets_zero_confidence(tmp_path):
    record = read_npz_features(write_npz(tmp_path / "8.npz", make_image("8", 2, seed=0), labels=False))
    assert not record.object_ids.any() and not record.object_confidences.any()


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("x", lambda image: image["features"].__setitem__((0, 0), np.nan)),
        ("bbox", lambda image: image["boxes"].__setitem__((0, 3), 150.0)),
        ("objects_conf", lambda image: image["objects_conf"].__setitem__(1, -0.5)),
        ("num_bbox", lambda image: image.__setitem__("num_boxes", 9)),
    ],
)
def test_corrupt_npz_names_file_and_field(tmp_path, field, change):
    image = make_image("9", 3, seed=0)
    change(image)
    path = write_npz(tmp_path / "9.npz", image)
    with pytest.raises(BadRecordError) as error:
        read_npz_features(path)
    assert (error.value.location, error.value.field) == (str(path), field)


def test_npz_missing_key_and_broken_archive_are_named(tmp_path):
    image = make_image("1", 3, seed=0)
    path = tmp_path / "1.npz"
    np.savez(path, x=image["features"], image_h=100, image_w=200)
    with pytest.raises(BadRecordError, match=r"1.npz, field 'bbox or boxes': missing"):
        read_npz_features(path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(BadRecordError, match=r"1.npz, field 'file': not a readable .npz"):
        read_npz_features(path)
    path.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(BadRecordError, match=r"1.npz, field 'file'"):
        read_npz_features(path)


@pytest.mark.parametrize(("field", "value"), [("img_h", 10**20), ("img_w", 2**31)])
def test_an_image_size_beyond_the_stores_integers_is_named(tmp_path, field, value):
    path = write_tsv(tmp_path / "a.tsv", [corrupt(make_image("a", 3, seed=0), field, value)])
    with pytest.raises(BadRecordError, match=rf"line 1, field '{field}': image size .* beyond"):
        list(read_obj36_tsv(path))


def test_empty_feature_field_is_named_when_the_dim_is_inferred(tmp_path):
    path = write_tsv(tmp_path / "a.tsv", [corrupt(make_image("a", 3, seed=0), "features", "")])
    with pytest.raises(BadRecordError, match=r"line 1, field 'features': empty"):
        list(read_obj36_tsv(path))
