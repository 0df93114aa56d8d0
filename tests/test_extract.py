import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from tiny_detector import draw_images, jpeg_bytes, save_tiny_detector

from faster_rcnn_vg import FasterRcnnVgImageProcessor
from lxmert_s_msp.data import extract
from lxmert_s_msp.data.extract import ExtractSettings, extract_features
from lxmert_s_msp.data.readers import read_obj36_tsv
from lxmert_s_msp.data.store import FeatureStore

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> str:
    return save_tiny_detector(tmp_path_factory.mktemp("detector"))


def test_the_command_turns_a_folder_of_images_into_a_store_and_an_obj36_tsv(tmp_path, detector):
    sizes = draw_images(tmp_path / "images")
    (tmp_path / "images" / "captions.txt").write_text("not an image")

    result = subprocess.run(
        [sys.executable, "-m", "lxmert_s_msp.data.extract", str(tmp_path / "images"), str(tmp_path / "store"),
         "--detector", detector, "--num-regions", "10", "--batch-size", "4",
         "--tsv", str(tmp_path / "out.tsv")],
        cwd=REPOSITORY, capture_output=True, text=True,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    assert "ignoring 1 files that are not images by their suffix: captions.txt" in result.stderr
    store = FeatureStore(tmp_path / "store")
    assert sorted(store.image_ids) == sorted(sizes)
    assert (store.num_regions, store.feature_dim) == (10, 2048)
    assert not (tmp_path / "store" / extract.WORK_FOLDER).exists()
    records = {record.image_id: record for record in read_obj36_tsv(tmp_path / "out.tsv")}
    for image_id, (height, width) in sizes.items():
        row = store.index(image_id)
        count = int(store.num_boxes[row])
        assert 1 <= count <= 10 and tuple(store.image_sizes[row]) == (height, width), image_id
        assert np.isfinite(store.features[row]).all() and not store.features[row, count:].any()
        record = records[image_id]
        assert (record.height, record.width, len(record.boxes)) == (height, width, count)
        np.testing.assert_allclose(
            record.boxes / [width, height, width, height], store.boxes[row, :count], atol=1e-6
        )
        np.testing.assert_allclose(record.features, store.features[row, :count], rtol=1e-3, atol=1e-3)
        np.testing.assert_array_equal(record.object_ids, store.object_ids[row, :count])


def test_a_killed_extraction_resumes_and_redoes_only_unfinished_or_changed_chunks(
    tmp_path, detector, monkeypatch
):
    images = tmp_path / "images"
    images.mkdir()
    for index in range(6):
        (images / f"im{index}.jpg").write_bytes(jpeg_bytes(50 + 7 * index, 60, seed=index))
    monkeypatch.setattr(extract, "CHUNK_IMAGES", 2)
    seen: list[str] = []
    real_call = FasterRcnnVgImageProcessor.__call__

    def counting_call(self, images, names=None, **kwargs):
        if len(seen) == 5 and kill:
            raise KeyboardInterrupt  # killed in the third chunk
        seen.extend(Path(name).stem for name in names)
        return real_call(self, images, names, **kwargs)

    monkeypatch.setattr(FasterRcnnVgImageProcessor, "__call__", counting_call)
    settings = ExtractSettings(detector=detector, num_regions=10)
    kill = True
    with pytest.raises(KeyboardInterrupt):
        extract_features(images, tmp_path / "store", settings, batch_size=1, progress=False)
    with pytest.raises(FileNotFoundError, match="not a finished feature store"):
        FeatureStore(tmp_path / "store")
    (images / "im1.jpg").write_bytes(jpeg_bytes(80, 60, seed=9))  # changed after its chunk was finished

    kill, seen[:] = False, []
    resumed = extract_features(images, tmp_path / "store", settings, batch_size=1, progress=False)

    assert seen == ["im0", "im1", "im4", "im5"]  # the chunk (im2, im3) was finished and unchanged
    assert tuple(resumed.image_sizes[resumed.index("im1")]) == (60, 80)
    fresh = extract_features(images, tmp_path / "fresh", settings, batch_size=3, progress=False)
    assert sorted(resumed.image_ids) == sorted(fresh.image_ids)
    rows = resumed.indices(fresh.image_ids)
    np.testing.assert_allclose(resumed.features[rows], fresh.features[:], atol=2e-3)
    np.testing.assert_array_equal(resumed.boxes[rows], fresh.boxes[:])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.jpg", b"not an image at all", r"broken\.jpg: not a readable image"),
        ("truncated.jpg", jpeg_bytes(64, 64, seed=0)[:400], r"truncated\.jpg: not a readable image"),
        ("pixel.png", None, r"pixel\.png: 1x1 pixels"),
    ],
)
def test_an_unusable_image_stops_the_command_naming_the_file(
    tmp_path, detector, name, content, message, capsys
):
    images = tmp_path / "images"
    images.mkdir()
    (images / "good.jpg").write_bytes(jpeg_bytes(64, 64, seed=1))
    if content is None:
        PIL.Image.new("RGB", (1, 1), (200, 10, 10)).save(images / name)
    else:
        (images / name).write_bytes(content)

    with pytest.raises(SystemExit) as exit_info:
        extract.main([str(images), str(tmp_path / "store"), "--detector", detector, "--num-regions", "10"])

    assert exit_info.value.code == 1
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "store" / "store.json").exists()


def test_duplicate_image_ids_and_empty_folders_are_refused(tmp_path, detector):
    (tmp_path / "images" / "b").mkdir(parents=True)
    with pytest.raises(ValueError, match="no image files"):
        extract_features(tmp_path / "images", tmp_path / "store", ExtractSettings(detector=detector))
    (tmp_path / "images" / "a.jpg").write_bytes(jpeg_bytes(64, 64, seed=1))
    (tmp_path / "images" / "b" / "a.png").write_bytes(jpeg_bytes(64, 64, seed=2))
    with pytest.raises(ValueError, match="image id 'a' names two files"):
        extract_features(tmp_path / "images", tmp_path / "store", ExtractSettings(detector=detector))
