"""The importer of region features into one store, on tiny files written in the exact public formats."""

import json

import numpy as np
import pytest
import torch
from region_files import FEATURE_DIM, REGIONS, b64, corrupt, make_image, write_npz, write_tsv

from lxmert_s_msp.data import feature_import
from lxmert_s_msp.data.feature_import import ImportSettings, import_features
from lxmert_s_msp.data.readers import BadRecordError
from lxmert_s_msp.data.store import FeatureStore, float32_tensor

SETTINGS = ImportSettings(num_regions=REGIONS, feature_dim=FEATURE_DIM)


def import_tsv(tmp_path, images, settings=SETTINGS):
    """Import `images`, written as one obj36 file, into tmp_path/store."""
    return import_features(tmp_path / "store", [write_tsv(tmp_path / "a.tsv", images)], settings, False).store


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
    assert not (tmp_path / "store" / feature_import.WORK_FOLDER).exists()


def test_boxes_on_the_border_are_accepted_and_clipped_to_one(tmp_path):
    image = make_image("edge", 2, seed=0)
    image["boxes"][0] = [0, 0, 200, 100]
    image["boxes"][1] = [10, 10, 200.5, 100.5]  # within the one-pixel tolerance
    np.testing.assert_array_equal(import_tsv(tmp_path, [image]).boxes[0, :2, 2:], 1.0)


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


def test_rerun_after_interruption_does_not_convert_finished_files_again(tmp_path, monkeypatch):
    first = write_tsv(tmp_path / "a.tsv", [make_image("a1", 3, seed=0)])
    broken = make_image("b1", 3, seed=1)
    broken["features"][0, 0] = np.inf
    second = write_tsv(tmp_path / "b.tsv", [broken])
    with pytest.raises(BadRecordError, match="b.tsv, line 1"):
        import_features(tmp_path / "store", [first, second], SETTINGS, progress=False)
    work = tmp_path / "store" / feature_import.WORK_FOLDER
    assert [shard.name.split("-")[0] for shard in work.iterdir()] == ["a.tsv"]  # b's partial shard is gone
    assert (next(work.iterdir()) / "shard.json").is_file()

    calls = []
    real_reader = feature_import.read_obj36_tsv
    monkeypatch.setattr(
        feature_import, "read_obj36_tsv", lambda path, **kw: calls.append(path) or real_reader(path, **kw)
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
