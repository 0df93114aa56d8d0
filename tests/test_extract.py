import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from tiny_detector import draw_images, jpeg_bytes, one_class_ahead_detector, save_tiny_detector, tiny_detector

from faster_rcnn_vg import FasterRcnnVgImageProcessor
from faster_rcnn_vg.image_processing_faster_rcnn_vg import load_detector
from lxmert_s_msp.data import extract
from lxmert_s_msp.data.collators import read_regions
from lxmert_s_msp.data.extract import ExtractSettings, extract_features
from lxmert_s_msp.data.readers import read_obj36_tsv
from lxmert_s_msp.data.store import FeatureStore

REPOSITORY = Path(__file__).resolve().parents[1]
DETECT = FasterRcnnVgImageProcessor.__call__


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> str:
    return save_tiny_detector(tmp_path_factory.mktemp("detector"))


def run_command(*arguments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lxmert_s_msp.data.extract", *arguments],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        env=None if env is None else {**os.environ, **env},
    )


def test_the_command_turns_a_folder_of_images_into_a_store_and_an_obj36_tsv(tmp_path, detector):
    sizes = draw_images(tmp_path / "images")
    (tmp_path / "images" / "captions.txt").write_text("not an image")

    result = run_command(
        str(tmp_path / "images"), str(tmp_path / "store"), "--detector", detector, "--num-regions", "10",
        "--batch-size", "4", "--tsv", str(tmp_path / "out.tsv"),
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


def counting_processor(monkeypatch, kill_at: int | None = None) -> list[str]:
    """The image ids the detector runs on, in order; `KeyboardInterrupt` (a kill) before the `kill_at`-th."""
    seen: list[str] = []

    def counting_call(self, images, names=None, **kwargs):
        if kill_at is not None and len(seen) == kill_at - 1:
            raise KeyboardInterrupt
        seen.extend(Path(name).stem for name in names)
        return DETECT(self, images, names, **kwargs)

    monkeypatch.setattr(FasterRcnnVgImageProcessor, "__call__", counting_call)
    return seen


def test_a_killed_extraction_resumes_per_image(tmp_path, detector, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    for index in range(7):
        (images / f"im{index}.jpg").write_bytes(jpeg_bytes(50 + 7 * index, 60, seed=index))
    monkeypatch.setattr(extract, "CHUNK_IMAGES", 3)
    settings = ExtractSettings(detector=detector, num_regions=10)
    counting_processor(monkeypatch, kill_at=6)  # im0-im2 gathered into a shard, im3 and im4 each in a file
    with pytest.raises(KeyboardInterrupt):
        extract_features(images, tmp_path / "store", settings, batch_size=1, progress=False)
    with pytest.raises(FileNotFoundError, match="not a finished feature store"):
        FeatureStore(tmp_path / "store")
    (images / "im1.jpg").write_bytes(jpeg_bytes(80, 60, seed=9))  # changed after its shard was finished

    seen = counting_processor(monkeypatch)
    resumed = extract_features(images, tmp_path / "store", settings, batch_size=1, progress=False).store

    # im1's shard is redone; im3 and im4, finished before the kill, are not
    assert seen == ["im0", "im1", "im2", "im5", "im6"]
    assert tuple(resumed.image_sizes[resumed.index("im1")]) == (60, 80)
    fresh = extract_features(images, tmp_path / "fresh", settings, batch_size=3, progress=False).store
    assert sorted(resumed.image_ids) == sorted(fresh.image_ids)
    rows = resumed.indices(fresh.image_ids)
    # float16 rounding of batch-size-dependent float32 sums: one step of 2^-7 at values 8-16
    np.testing.assert_allclose(resumed.features[rows], fresh.features[:], rtol=2e-3, atol=2e-3)
    np.testing.assert_array_equal(resumed.boxes[rows], fresh.boxes[:])


def test_a_resumed_extraction_redoes_images_of_another_detector_or_region_count(tmp_path, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    for index in range(3):
        (images / f"im{index}.jpg").write_bytes(jpeg_bytes(64, 60, seed=index))
    detector = save_tiny_detector(tmp_path / "detector")
    settings = ExtractSettings(detector=detector, num_regions=10)
    counting_processor(monkeypatch, kill_at=3)  # im0 and im1 finished
    with pytest.raises(KeyboardInterrupt):
        extract_features(images, tmp_path / "store", settings, batch_size=1, progress=False)

    torch.manual_seed(1)
    save_tiny_detector(tmp_path / "detector", tiny_detector())  # other weights under the same name
    load_detector.cache_clear()
    seen = counting_processor(monkeypatch, kill_at=3)
    with pytest.raises(KeyboardInterrupt):
        extract_features(images, tmp_path / "store", settings, batch_size=1, progress=False)
    assert seen == ["im0", "im1"]
    seen = counting_processor(monkeypatch)
    extract_features(
        images, tmp_path / "store", ExtractSettings(detector, num_regions=12), batch_size=1, progress=False
    )
    assert seen == ["im0", "im1", "im2"]


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


def test_skip_bad_images_leaves_out_and_lists_each_unusable_image(tmp_path, detector):
    images = tmp_path / "images"
    images.mkdir()
    for index in range(3):
        (images / f"good{index}.jpg").write_bytes(jpeg_bytes(64, 70, seed=index))
    (images / "broken.jpg").write_bytes(b"not an image at all")
    (images / "truncated.jpg").write_bytes(jpeg_bytes(64, 64, seed=5)[:400])
    PIL.Image.new("RGB", (1, 1)).save(images / "pixel.png")  # readable, refused by the detector's checks

    result = run_command(
        str(images), str(tmp_path / "store"), "--detector", detector, "--num-regions", "10",
        "--batch-size", "4", "--skip-bad-images",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(FeatureStore(tmp_path / "store").image_ids) == ["good0", "good1", "good2"]
    listed = result.stderr[result.stderr.index("skipped 3 images that cannot be used:") :]
    for name, why in [
        ("broken.jpg", "not a readable"),
        ("truncated.jpg", "not a readable"),
        ("pixel.png", "1x1"),
    ]:
        assert re.search(rf"\n  \S*{re.escape(name)}: {why}", listed), listed


def test_features_beyond_the_float16_range_stop_the_run_naming_the_image(tmp_path):
    model = tiny_detector()
    with torch.no_grad():  # res5's shortcut scaled up a million-fold: finite features, far beyond 65,504
        model.head.res5[0].downsample[1].weight.mul_(1e6)
    detector = save_tiny_detector(tmp_path / "detector", model)
    images = tmp_path / "images"
    images.mkdir()
    (images / "photo.jpg").write_bytes(jpeg_bytes(64, 70, seed=0))

    result = run_command(str(images), str(tmp_path / "store"), "--detector", detector, "--num-regions", "10")

    assert result.returncode == 1
    assert re.search(r"error: \S*photo\.jpg: the detector's region features reach [\d.e+]+, beyond the "
                     r"\+-65504 of the float16 feature store", result.stderr), result.stderr  # fmt: skip
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "store").exists()


def test_offline_without_a_local_detector_says_how_to_get_one_and_writes_nothing(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "photo.jpg").write_bytes(jpeg_bytes(64, 70, seed=0))

    result = run_command(
        str(images), str(tmp_path / "store"), env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert "error: unc-nlp/frcnn-vg-finetuned: no such folder" in result.stderr
    assert "hf download unc-nlp/frcnn-vg-finetuned --local-dir" in result.stderr
    assert "--detector frcnn-vg-finetuned" in result.stderr
    assert not (tmp_path / "store").exists()


def test_a_detector_that_is_a_file_is_refused_before_anything_is_written(tmp_path, detector):
    images = tmp_path / "images"
    images.mkdir()
    (images / "photo.jpg").write_bytes(jpeg_bytes(64, 70, seed=0))

    result = run_command(
        str(images), str(tmp_path / "store"), "--detector", str(Path(detector) / "config.json")
    )

    assert result.returncode == 1
    assert re.search(
        r"error: \S*config\.json: a file, not a detector: give the folder that holds", result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "store").exists()


def test_the_adaptive_mode_stores_each_images_count_and_readers_mask_the_rest(tmp_path):
    detector = save_tiny_detector(tmp_path / "detector", one_class_ahead_detector())
    images = tmp_path / "images"
    images.mkdir()
    for index, (width, height) in enumerate([(64, 64), (200, 80), (90, 150)]):
        (images / f"im{index}.jpg").write_bytes(jpeg_bytes(width, height, seed=index))

    report = extract_features(
        images, tmp_path / "store", ExtractSettings(detector, num_regions="adaptive"), progress=False
    )

    store = report.store
    assert store.num_regions == 100
    detected = FasterRcnnVgImageProcessor(detector, num_regions="adaptive")(
        [PIL.Image.open(images / f"{image_id}.jpg") for image_id in store.image_ids]
    )
    counts = np.asarray(store.num_boxes)
    np.testing.assert_array_equal(counts, detected["num_boxes"])
    assert ((counts >= 10) & (counts <= 100)).all() and len(set(counts.tolist())) > 1
    for row, count in enumerate(counts):
        assert not store.features[row, count:].any() and not store.boxes[row, count:].any()
    regions = read_regions(store, np.arange(len(store)), num_regions=36)  # what the collators read
    np.testing.assert_array_equal(regions["visual_attention_mask"].sum(dim=1).numpy(), np.minimum(counts, 36))
