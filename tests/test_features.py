"""Readers and importer of region features, on tiny files written in the exact public formats."""

import base64
import csv
import json
import pickle

import numpy as np
import pytest
import torch

from lxmert_s_msp.data import features
from lxmert_s_msp.data.features import (
    OBJ36_FIELDS,
    BadRecordError,
    ImportSettings,
    import_features,
    main,
    read_npz_features,
    read_obj36_tsv,
)
from lxmert_s_msp.data.store import FeatureStore, float32_tensor

FEATURE_DIM = 16
REGIONS = 5
SETTINGS = ImportSettings(num_regions=REGIONS, feature_dim=FEATURE_DIM)
LABEL_FIELDS = ("objects_id", "objects_conf", "attrs_id", "attrs_conf")
SIZE_FLAGS = ["--num-regions", str(REGIONS), "--feature-dim", str(FEATURE_DIM)]


def make_image(image_id, num_boxes, seed, height=100, width=200):
    """One image's detections as an extractor writes them (pixel boxes inside the image)."""
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(0, width / 2, num_boxes)
    y1 = rng.uniform(0, height / 2, num_boxes)
    x2 = x1 + rng.uniform(1, width / 2, num_boxes)
    y2 = y1 + rng.uniform(1, height / 2, num_boxes)
    return {
        "img_id": image_id,
        "img_h": height,
        "img_w": width,
        "objects_id": rng.integers(0, 1600, num_boxes),
        "objects_conf": rng.uniform(0.2, 1, num_boxes),
        "attrs_id": rng.integers(0, 400, num_boxes),
        "attrs_conf": rng.uniform(0, 1, num_boxes),
        "num_boxes": num_boxes,
        "boxes": np.stack([x1, y1, x2, y2], axis=1),
        "features": rng.uniform(0, 5, (num_boxes, FEATURE_DIM)),
    }


def b64(array, dtype):
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def obj36_row(image):
    """The image's fields as LXMERT's extraction writes them: raw little-endian arrays in base64."""
    dtypes = dict(zip(LABEL_FIELDS, ("<i8", "<f4", "<i8", "<f4"), strict=True), boxes="<f4", features="<f4")
    return {
        name: b64(value, dtypes[name]) if isinstance(value, np.ndarray) else value
        for name, value in image.items()
    }


def write_tsv(path, images):
    """An obj36 file written the way the extraction script does: csv.DictWriter, tab-delimited."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, OBJ36_FIELDS, delimiter="\t")
        writer.writerows(obj36_row(image) for image in images)
    return path


def import_tsv(tmp_path, images, settings=SETTINGS):
    """Import `images`, written as one obj36 file, into tmp_path/store."""
    return import_features(tmp_path / "store", [write_tsv(tmp_path / "a.tsv", images)], settings, False).store


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


def test_import_pads_normalises_and_converts_to_float16(tmp_path):
    first = write_tsv(tmp_path / "a.tsv", [make_image("a1", 3, seed=0), make_image("a2", 5, seed=1)])
    second = write_tsv(tmp_path / "b.tsv", [make_image("b1", 1, seed=2, height=50, width=70)])

    store = import_features(tmp_path / "store", [first, second], SETTINGS, progress=False).store

    assert store.image_ids == ["a1", "a2", "b1"]
    assert store.features.dtype == np.float16 and store.features.shape == (3, REGIONS, FEATURE_DIM)
    np.testing.assert_array_equal(store.num_boxes, [3, 5, 1])
    np.testing.assert_array_equal(store.image_sizes, [[100, 200], [100, 200], [50, 70]])
    image = make_image("b1", 1, seed=2, height=50, width=70)
    np.testing.assert_allclose(store.features[2, 0], image["features"][0], rtol=1e-3)
    np.testing.assert_allclose(store.boxes[2, 0], image["boxes"][0] / [70, 50, 70, 50], rtol=1e-6)
    np.testing.assert_array_equal(store.object_ids[2, 0], image["objects_id"][0])
    for array in (store.features, store.boxes, store.object_confidences, store.attribute_confidences):
        assert not np.asarray(array[2, 1:]).any()  # padding: zeros, confidence 0
    assert not (tmp_path / "store" / features.WORK_FOLDER).exists()


def test_boxes_on_the_border_are_accepted_and_clipped_to_one(tmp_path):
    image = make_image("edge", 2, seed=0)
    image["boxes"][0] = [0, 0, 200, 100]
    image["boxes"][1] = [10, 10, 200.5, 100.5]  # within the one-pixel tolerance
    np.testing.assert_array_equal(import_tsv(tmp_path, [image]).boxes[0, :2, 2:], 1.0)


def corrupt(image, field, value):
    image[field] = value
    return image


CORRUPTIONS = {
    "bad base64": ("features", lambda image: corrupt(image, "features", "not*base64!")),
    "wrong byte count": ("boxes", lambda image: corrupt(image, "boxes", b64(np.zeros((2, 4)), "<f4"))),
    # every array holds 3 regions: the count is what is wrong, not the first array read
    "num_boxes disagrees with the arrays": ("num_boxes", lambda image: corrupt(image, "num_boxes", 2)),
    "one array short": ("attrs_id", lambda image: corrupt(image, "attrs_id", b64(np.zeros(2), "<i8"))),
    "NaN feature": ("features", lambda image: image["features"].__setitem__((1, 3), np.nan) or image),
    "inf confidence": ("objects_conf", lambda image: image["objects_conf"].__setitem__(0, np.inf) or image),
    "box beyond width": ("boxes", lambda image: image["boxes"].__setitem__((2, 2), 201.5) or image),
    "negative box": ("boxes", lambda image: image["boxes"].__setitem__((0, 1), -3.0) or image),
    "too many boxes": ("num_boxes", lambda image: make_image(image["img_id"], REGIONS + 1, seed=9)),
    "height not an integer": ("img_h", lambda image: corrupt(image, "img_h", "tall")),
    "float16 overflow": ("features", lambda image: image["features"].__setitem__((0, 0), 1e6) or image),
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_row_stops_the_import_naming_file_line_and_field(tmp_path, kind):
    field, make_corrupt = CORRUPTIONS[kind]
    images = [make_image("good", 3, seed=0), make_corrupt(make_image("bad", 3, seed=1))]
    path = write_tsv(tmp_path / "feats_obj36.tsv", images)

    with pytest.raises(BadRecordError) as error:
        import_features(tmp_path / "store", [path], SETTINGS, progress=False)

    assert (error.value.location, error.value.field) == (f"{path}, line 2", field)
    assert str(path) in str(error.value) and "line 2" in str(error.value) and f"'{field}'" in str(error.value)
    assert not (tmp_path / "store").exists()  # a failed import of one input leaves nothing behind


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


def test_skip_bad_rows_counts_and_reports_each_row(tmp_path, capsys):
    images = [make_image(f"i{index}", 3, seed=index) for index in range(4)]
    images[1]["features"][0, 0] = np.nan
    images[3]["boxes"] = "@@@"
    path = write_tsv(tmp_path / "a.tsv", images)
    store_path = tmp_path / "store"

    main(["import", str(store_path), str(path), *SIZE_FLAGS, "--skip-bad-rows"])

    assert FeatureStore(store_path).image_ids == ["i0", "i2"]
    stderr = capsys.readouterr().err
    assert f"skipped {path}, line 2, field 'features': contains NaN or inf" in stderr
    assert f"skipped {path}, line 4, field 'boxes': bad base64" in stderr
    assert f"skipped 2 corrupt rows ({path}: 2)" in stderr


def test_without_skip_flag_the_command_exits_with_the_error(tmp_path, capsys):
    image = make_image("a", 3, seed=0)
    image["attrs_conf"][1] = 1.5
    path = write_tsv(tmp_path / "a.tsv", [image])
    with pytest.raises(SystemExit) as exit_info:
        main(["import", str(tmp_path / "store"), str(path), *SIZE_FLAGS])
    assert exit_info.value.code == 1
    assert f"{path}, line 1, field 'attrs_conf': confidence outside [0, 1]" in capsys.readouterr().err


def test_rerun_after_interruption_does_not_convert_finished_files_again(tmp_path, monkeypatch):
    first = write_tsv(tmp_path / "a.tsv", [make_image("a1", 3, seed=0)])
    broken = make_image("b1", 3, seed=1)
    broken["features"][0, 0] = np.inf
    second = write_tsv(tmp_path / "b.tsv", [broken])
    with pytest.raises(BadRecordError, match="b.tsv, line 1"):
        import_features(tmp_path / "store", [first, second], SETTINGS, progress=False)
    work = tmp_path / "store" / features.WORK_FOLDER
    assert [shard.name.split("-")[0] for shard in work.iterdir()] == ["a.tsv"]  # b's partial shard is gone
    assert (next(work.iterdir()) / "shard.json").is_file()

    calls = []
    real_reader = features.read_obj36_tsv
    monkeypatch.setattr(
        features, "read_obj36_tsv", lambda path, **kw: calls.append(path) or real_reader(path, **kw)
    )
    write_tsv(second, [make_image("b1", 3, seed=1)])
    store = import_features(tmp_path / "store", [first, second], SETTINGS, progress=False).store

    assert calls == [second]
    assert store.image_ids == ["a1", "b1"]
    np.testing.assert_allclose(store.features[0, :3], make_image("a1", 3, seed=0)["features"], rtol=1e-3)


def test_changed_input_is_converted_again_on_rerun(tmp_path):
    first = write_tsv(tmp_path / "a.tsv", [make_image("a1", 3, seed=0)])
    second = write_tsv(tmp_path / "b.tsv", [corrupt(make_image("b1", 3, seed=1), "boxes", "")])
    with pytest.raises(BadRecordError):
        import_features(tmp_path / "store", [first, second], SETTINGS, progress=False)
    write_tsv(first, [make_image("a1", 4, seed=5)])
    write_tsv(second, [make_image("b1", 3, seed=1)])

    store = import_features(tmp_path / "store", [first, second], SETTINGS, progress=False).store

    assert store.num_boxes[0] == 4


def test_duplicate_image_ids_name_both_files(tmp_path):
    first = write_tsv(tmp_path / "a.tsv", [make_image("same", 3, seed=0)])
    second = write_tsv(tmp_path / "b.tsv", [make_image("other", 3, seed=1), make_image("same", 3, seed=2)])
    with pytest.raises(ValueError, match=rf"'same' is in two inputs: {first} and {second}"):
        import_features(tmp_path / "store", [first, second], SETTINGS, progress=False)


def test_duplicate_image_ids_within_a_file_name_both_lines(tmp_path):
    path = write_tsv(tmp_path / "a.tsv", [make_image("same", 3, seed=0), make_image("same", 3, seed=1)])
    with pytest.raises(ValueError, match=rf"'same' appears twice: {path}, line 1 and {path}, line 2"):
        import_features(tmp_path / "store", [path], SETTINGS, progress=False)


def test_truncate_keeps_the_first_regions(tmp_path):
    image = make_image("big", REGIONS + 2, seed=0)
    settings = ImportSettings(num_regions=REGIONS, feature_dim=FEATURE_DIM, truncate=True)
    store = import_tsv(tmp_path, [image], settings)
    assert store.num_boxes[0] == REGIONS
    np.testing.assert_allclose(store.features[0], image["features"][:REGIONS], rtol=1e-3)


def write_npz(path, image, keys=("x", "bbox", "image_h", "image_w"), labels=True, **extra):
    arrays = dict(zip(keys, (image["features"], image["boxes"], image["img_h"], image["img_w"]), strict=True))
    if labels:
        arrays.update({name: image[name] for name in LABEL_FIELDS})
    np.savez_compressed(path, num_bbox=image["num_boxes"], **arrays, **extra)
    return path


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


def test_import_mixes_tsv_files_and_npz_folders(tmp_path):
    folder = tmp_path / "npz"
    folder.mkdir()
    for index in (2, 1):
        write_npz(folder / f"{index}.npz", make_image(str(index), 2, seed=index))
    (folder / "notes.txt").write_text("not a feature file")
    tsv = write_tsv(tmp_path / "a.tsv", [make_image("a", 3, seed=0)])

    report = import_features(tmp_path / "store", [tsv, folder], SETTINGS, progress=False)

    assert report.store.image_ids == ["a", "1", "2"]
    assert report.skipped_rows == {str(tsv): 0, str(folder): 0}
    expected = make_image("2", 2, seed=2)["features"]
    np.testing.assert_allclose(report.store.features[2, :2], expected, rtol=1e-3)


def test_missing_input_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.tsv"):
        import_features(tmp_path / "store", [tmp_path / "nowhere.tsv"], SETTINGS, progress=False)


def test_reimport_replaces_the_store_and_its_metadata(tmp_path):
    import_tsv(tmp_path, [make_image("a", 3, seed=0)])
    import_tsv(tmp_path, [make_image("x", 2, seed=1), make_image("y", 2, seed=2)])
    assert FeatureStore(tmp_path / "store").image_ids == ["x", "y"]
    assert json.loads((tmp_path / "store" / "store.json").read_text())["num_images"] == 2


def test_float32_tensor_gives_the_values_of_tensor_float():
    features = np.random.default_rng(0).standard_normal((3, REGIONS, FEATURE_DIM)).astype(np.float16)
    converted = float32_tensor(features)
    assert converted.dtype == torch.float32 and converted.shape == (3, REGIONS, FEATURE_DIM)
    assert torch.equal(converted, torch.from_numpy(features).float())


def test_empty_feature_field_is_named_when_the_dim_is_inferred(tmp_path):
    path = write_tsv(tmp_path / "a.tsv", [corrupt(make_image("a", 3, seed=0), "features", "")])
    with pytest.raises(BadRecordError, match=r"line 1, field 'features': empty"):
        list(read_obj36_tsv(path))
