"""Hard negatives: nearest other images by the cosine of mean-pooled valid region features."""

import numpy as np
import pytest
import torch

from lxmert_s_msp.data.hard_negatives import (
    HARD_NEGATIVES_FILE,
    build_hard_negatives,
    load_hard_negatives,
    main,
    mean_region_features,
)
from lxmert_s_msp.data.store import write_store

REGIONS = 5
FEATURE_DIM = 16


def save_store(path, features, num_boxes):
    count = len(features)
    zeros = np.zeros((count, REGIONS))
    return write_store(
        path,
        [f"img{index}" for index in range(count)],
        features=features,
        boxes=np.zeros((count, REGIONS, 4)),
        object_ids=zeros,
        object_confidences=zeros,
        attribute_ids=zeros,
        attribute_confidences=zeros,
        num_boxes=np.asarray(num_boxes),
        image_sizes=np.full((count, 2), 100),
    )


@pytest.fixture
def planted_store(tmp_path):
    """Six unrelated images, of which 3 is a near copy of 0 and 5 of 1."""
    rng = np.random.default_rng(0)
    features = rng.uniform(0, 3, (6, REGIONS, FEATURE_DIM))
    features[3] = features[0] + rng.normal(0, 0.01, (REGIONS, FEATURE_DIM))
    features[5] = features[1] + rng.normal(0, 0.01, (REGIONS, FEATURE_DIM))
    return save_store(tmp_path / "store", features, [REGIONS] * 6)


def test_planted_near_duplicate_is_the_top_negative(planted_store):
    negatives = build_hard_negatives(planted_store, top_m=3, batch_size=4)
    assert negatives.shape == (6, 3) and negatives.dtype == np.int64
    assert [negatives[row, 0] for row in (0, 3, 1, 5)] == [3, 0, 5, 1]


def test_an_image_is_never_its_own_negative_and_missing_slots_are_minus_one(planted_store):
    negatives = build_hard_negatives(planted_store, top_m=8, batch_size=4)
    for row in range(6):
        assert sorted(negatives[row, :5]) == sorted(set(range(6)) - {row})
        assert (negatives[row, 5:] == -1).all()


def test_padding_regions_do_not_enter_the_mean(tmp_path):
    rng = np.random.default_rng(1)
    valid = rng.uniform(0, 1, (2, FEATURE_DIM))
    garbage = rng.uniform(50, 100, (REGIONS - 2, FEATURE_DIM))
    features = np.zeros((3, REGIONS, FEATURE_DIM))
    features[0] = np.concatenate([valid, garbage])  # 2 valid regions, garbage where padding is
    features[1, :2] = valid + rng.normal(0, 0.01, valid.shape)
    features[2] = np.concatenate([garbage, garbage[:2]])  # an image made of what image 0 pads with
    store = save_store(tmp_path / "store", features, [2, 2, REGIONS])

    pooled = mean_region_features(store)
    expected = torch.nn.functional.normalize(torch.tensor(valid.mean(0), dtype=torch.float32), dim=0)
    torch.testing.assert_close(pooled[0], expected, atol=1e-3, rtol=1e-3)  # float16 storage
    assert build_hard_negatives(store, top_m=2)[0, 0] == 1


def test_loader_returns_the_saved_file_and_refuses_a_stale_one(planted_store):
    negatives = build_hard_negatives(planted_store, top_m=2)
    np.testing.assert_array_equal(load_hard_negatives(planted_store.path), negatives)

    np.save(planted_store.path / HARD_NEGATIVES_FILE, negatives[:4])
    with pytest.raises(ValueError, match=r"hard_negatives.npy is stale: .* shape \(4, 2\).* 6 images"):
        load_hard_negatives(planted_store.path)


def test_rewriting_the_store_removes_its_hard_negatives(planted_store, tmp_path):
    build_hard_negatives(planted_store, top_m=2)
    save_store(planted_store.path, np.ones((4, REGIONS, FEATURE_DIM)), [REGIONS] * 4)
    with pytest.raises(FileNotFoundError, match="python -m lxmert_s_msp.data.hard_negatives"):
        load_hard_negatives(planted_store.path)


def test_command_line_builds_the_file(planted_store, capsys):
    main([str(planted_store.path), "--top-m", "4", "--device", "cpu"])
    assert load_hard_negatives(planted_store.path).shape == (6, 4)
    assert "6 images x 4 negatives" in capsys.readouterr().out
