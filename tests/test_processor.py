import logging
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from model_inputs import tiny_config
from transformers import AutoConfig, AutoModelForPreTraining, AutoProcessor, AutoTokenizer

from lxmert_s_msp.data.tokenizer import wordpiece_tokenizer_from_vocabulary
from modeling_lxmert_s import LxmertSForPreTraining
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor, fit_regions

# ids 5.. in this order; "striped" is three WordPieces so that pieces of one word are exercised.
VOCABULARY = ["a", "man", "'", "s", "red", "-", "str", "##ipe", "##d", "shirt", ",", "blue", "sky"]
MODEL_INPUT_NAMES = {
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "position_ids",
    "visual_feats",
    "visual_pos",
    "visual_attention_mask",
}


@pytest.fixture
def processor() -> LxmertSProcessor:
    return LxmertSProcessor(wordpiece_tokenizer_from_vocabulary(VOCABULARY), num_regions=6, max_length=20)


def test_word_position_ids_match_whitespace_words(processor):
    encoded = processor(["a man's red-striped shirt, blue sky", "  blue\tsky\n a,red  man "])

    tokens = processor.tokenizer.convert_ids_to_tokens(encoded["input_ids"][0][:15].tolist())
    words = ["a", "man", "'", "s", "red", "-", "str", "##ipe", "##d", "shirt", ",", "blue", "sky"]
    assert tokens == ["[CLS]", *words, "[SEP]"]
    # a | man's | red-striped | shirt, | blue | sky ; [CLS]/[SEP] 1, padding 0
    assert encoded["position_ids"][0].tolist() == [1, 2, 3, 3, 3, 4, 4, 4, 4, 4, 5, 5, 6, 7, 1] + [0] * 5
    # blue | sky | a,red | man, with tabs, newlines and repeated spaces between them
    assert encoded["position_ids"][1].tolist() == [1, 2, 3, 4, 4, 4, 5, 1] + [0] * 12
    assert encoded["attention_mask"][1].tolist() == [1] * 8 + [0] * 12
    assert encoded["token_type_ids"].eq(0).all()


def test_long_text_is_truncated_to_max_length_with_sep_last(processor):
    encoded = processor(" ".join(["sky"] * 25))

    assert encoded["input_ids"].shape == (1, 20)
    assert encoded["input_ids"][0, -1] == processor.tokenizer.sep_token_id
    assert encoded["position_ids"][0].tolist() == [1, *range(2, 20), 1]


def test_absolute_position_ids_count_every_slot():
    processor = LxmertSProcessor(
        wordpiece_tokenizer_from_vocabulary(VOCABULARY), max_length=8, position_ids_type="absolute"
    )

    encoded = processor(["a man's shirt", "sky"])

    assert encoded["position_ids"].tolist() == [list(range(8))] * 2


def test_regions_are_normalised_padded_and_truncated(processor):
    features = [np.arange(4 * 3, dtype=np.float32).reshape(4, 3), np.ones((8, 3), np.float32)]
    boxes = [np.tile([10.0, 20.0, 30.0, 40.0], (4, 1)), np.tile([0.0, 0.0, 100.0, 50.0], (8, 1))]

    encoded = processor(
        ["a man", "blue sky"], features, boxes, image_sizes=[[50, 100], [50, 100]], truncate_regions=True
    )

    assert set(encoded) == set(processor.model_input_names) == MODEL_INPUT_NAMES
    assert encoded["visual_feats"].dtype == torch.float32 and encoded["visual_feats"].shape == (2, 6, 3)
    assert encoded["visual_attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]
    assert torch.equal(encoded["visual_feats"][0, :4], torch.from_numpy(features[0]))
    assert encoded["visual_feats"][0, 4:].eq(0).all() and encoded["visual_pos"][0, 4:].eq(0).all()
    # x by the width (100), y by the height (50)
    assert torch.allclose(encoded["visual_pos"][0, 0], torch.tensor([0.1, 0.4, 0.3, 0.8]))
    assert encoded["visual_pos"][1].eq(torch.tensor([0.0, 0.0, 1.0, 1.0])).all()


def test_numpy_and_torch_batches_give_the_same_inputs(processor):
    rng = np.random.default_rng(0)
    features = rng.random((2, 7, 5), dtype=np.float32)
    corners = np.sort(rng.random((2, 7, 2, 2), dtype=np.float32), axis=2)  # (x1, y1) <= (x2, y2)
    boxes = corners.reshape(2, 7, 4)

    from_numpy = processor(["a", "sky"], features, boxes, boxes_normalized=True, truncate_regions=True)
    from_torch = processor(
        ["a", "sky"],
        torch.from_numpy(features),
        torch.from_numpy(boxes),
        boxes_normalized=True,
        truncate_regions=True,
    )

    for name in MODEL_INPUT_NAMES:
        assert torch.equal(from_numpy[name], from_torch[name]), name
    assert torch.equal(from_numpy["visual_pos"], torch.from_numpy(boxes[:, :6]))


def test_fit_regions_zeroes_everything_past_num_boxes():
    arrays = {"confidences": np.full((2, 4), 0.9, np.float32), "features": np.ones((2, 4, 2), np.float16)}

    fitted, mask = fit_regions(arrays, np.array([1, 4]), num_regions=3)

    assert mask.tolist() == [[True, False, False], [True, True, True]]
    np.testing.assert_array_equal(fitted["confidences"], np.float32([[0.9, 0, 0], [0.9, 0.9, 0.9]]))
    assert fitted["features"].dtype == np.float16 and fitted["features"][0, 1:].sum() == 0


def test_processor_round_trips_through_save_pretrained(tmp_path):
    processor = LxmertSProcessor(
        wordpiece_tokenizer_from_vocabulary(VOCABULARY),
        num_regions=10,
        max_length=12,
        position_ids_type="absolute",
    )
    processor.save_pretrained(tmp_path)

    reloaded = LxmertSProcessor.from_pretrained(tmp_path)

    assert (reloaded.num_regions, reloaded.max_length, reloaded.position_ids_type) == (10, 12, "absolute")
    assert reloaded.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert torch.equal(reloaded("a red shirt")["input_ids"], processor("a red shirt")["input_ids"])


def test_our_classes_load_our_folder_without_asking_to_run_its_code(tmp_path, monkeypatch, caplog):
    """A saved model folder carries its code for Hub users (`trust_remote_code=True`); with this package
    imported, its own classes and the Auto classes load the folder with no prompt to run that copy, and
    with no 'a model of type lxmert_s to instantiate a model of type ...' fallback."""
    LxmertSForPreTraining(tiny_config()).save_pretrained(tmp_path)
    LxmertSProcessor(wordpiece_tokenizer_from_vocabulary(VOCABULARY)).save_pretrained(tmp_path)
    prompts = []
    monkeypatch.setattr("builtins.input", lambda question="": prompts.append(question) or "n")
    with caplog.at_level(logging.WARNING):
        loaded = [
            LxmertSProcessor.from_pretrained(tmp_path),
            AutoProcessor.from_pretrained(tmp_path),
            AutoTokenizer.from_pretrained(tmp_path),
            AutoConfig.from_pretrained(tmp_path),
            AutoModelForPreTraining.from_pretrained(tmp_path),
        ]
    assert not prompts
    assert "model of type" not in caplog.text
    assert [type(item).__name__ for item in loaded] == [
        "LxmertSProcessor",
        "LxmertSProcessor",
        "BertTokenizer",
        "LxmertSConfig",
        "LxmertSForPreTraining",
    ]
    assert all(type(item).__module__.startswith("modeling_lxmert_s.") for item in loaded[:2] + loaded[3:])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"visual_feats": np.ones((2, 3)), "boxes": np.ones((2, 5))},
            r"boxes\[0\]: expected .* received shape \(2, 5\)",
        ),
        (
            {"visual_feats": [np.ones((2, 3)), np.ones((3, 3))], "boxes": [np.ones((2, 4)), np.ones((2, 4))]},
            r"boxes\[1\]: expected shape \(3, 4\) like visual_feats\[1\], received \(2, 4\)",
        ),
        (
            {"visual_feats": np.ones((1, 2, 3, 4)), "boxes": np.ones((2, 4))},
            r"visual_feats: .* shape \(1, 2, 3, 4\)",
        ),
        ({"visual_feats": np.full((2, 3), np.nan), "boxes": np.ones((2, 4))}, r"visual_feats\[0\]: .*NaN"),
        ({"visual_feats": np.ones((2, 3)), "boxes": np.ones((2, 4))}, r"image_sizes: expected \(batch, 2\)"),
        (
            {"visual_feats": np.ones((2, 3)), "boxes": np.ones((2, 4)), "image_sizes": [[10, 10, 3]]},
            r"image_sizes: expected shape \(1, 2\), received \(1, 3\)",
        ),
        (
            {
                "visual_feats": np.ones((2, 3)),
                "boxes": np.array([[0, 0, 5, 5], [0, 0, 12, 5]]),
                "image_sizes": [[10, 10]],
            },
            r"boxes\[0\]\[1\]: expected .* inside the image .* received \[0, 0, 12, 5\]",
        ),
        ({"visual_feats": np.ones((2, 3))}, "boxes: expected one box per region"),
        ({"text": []}, r"text: expected at least one text, received an empty list"),
        ({"text": 3}, r"text: expected a string or a list of strings, received int"),
        ({"text": ["a man", 3]}, r"text\[1\]: expected a string, received int 3"),
        ({"text": ["a man", None]}, r"text\[1\]: expected a string, received NoneType None"),
        ({"visual_feats": [], "boxes": []}, r"visual_feats: expected at least one image, received none"),
        ({"visual_feats": np.ones((2, 0)), "boxes": np.ones((2, 4))}, r"visual_feats\[0\]: expected values"),
        (
            {
                "visual_feats": np.ones((2, 3)),
                "boxes": np.array([[0, 0, 5, 5], [6, 0, 2, 5]]),
                "image_sizes": [10, 10],
            },
            r"boxes\[0\]\[1\]: expected x1, y1, x2, y2 with x1 <= x2 and y1 <= y2, received \[6, 0, 2, 5\]",
        ),
        (
            {
                "visual_feats": np.ones((1, 3)),
                "boxes": np.array([[0.1, 0.9, 0.5, 0.2]]),
                "boxes_normalized": True,
            },
            r"boxes\[0\]\[0\]: expected x1, y1, x2, y2 with x1 <= x2 and y1 <= y2",
        ),
        (
            {"visual_feats": np.ones((7, 3)), "boxes": np.ones((7, 4)), "boxes_normalized": True},
            r"visual_feats\[0\]: 7 regions, more than the processor's num_regions 6; pass "
            "truncate_regions=True",
        ),
        (
            {
                "text": ["a", "b"],
                "visual_feats": np.ones((2, 2, 3)),
                "boxes": np.ones((2, 2, 4)),
                "image_sizes": [9, 9],
            },
            r"image_sizes: expected shape \(2, 2\), received \(2,\)",
        ),
        ({"text": None}, "text, visual_feats: expected at least one"),
        (
            {
                "text": ["a", "sky"],
                "visual_feats": np.ones((2, 3)),
                "boxes": np.ones((2, 4)),
                "boxes_normalized": True,
            },
            "expected one image per text, received 2 texts and 1 images",
        ),
    ],
)
def test_bad_input_names_the_argument_and_shapes(processor, arguments, message):
    arguments = {"text": "a man", **arguments}
    with pytest.raises(ValueError, match=message):
        processor(**arguments)


def test_one_images_size_may_be_a_pair():
    processor = LxmertSProcessor(wordpiece_tokenizer_from_vocabulary(VOCABULARY), num_regions=2)
    boxes = np.array([[0.0, 0.0, 50.0, 20.0]])

    as_pair = processor("a man", np.ones((1, 3)), boxes, image_sizes=(40, 100))
    as_batch = processor("a man", np.ones((1, 3)), boxes, image_sizes=[[40, 100]])

    assert as_pair["visual_pos"][0, 0].tolist() == [0.0, 0.0, 0.5, 0.5]
    assert torch.equal(as_pair["visual_pos"], as_batch["visual_pos"])


def test_unknown_position_ids_type_is_refused():
    with pytest.raises(ValueError, match="position_ids_type: expected 'word' or 'absolute', got 'bert'"):
        LxmertSProcessor(wordpiece_tokenizer_from_vocabulary(VOCABULARY), position_ids_type="bert")


def test_processor_detects_regions_in_an_image_for_the_vqa_model(tmp_path):
    from model_inputs import tiny_config
    from tiny_detector import noise, save_tiny_detector

    from faster_rcnn_vg import FasterRcnnVgImageProcessor
    from modeling_lxmert_s import LxmertSForQuestionAnswering

    detector = save_tiny_detector(tmp_path / "detector")
    processor = LxmertSProcessor(
        wordpiece_tokenizer_from_vocabulary(["what", "is", "the", "man", "holding", "?"]),
        image_processor=FasterRcnnVgImageProcessor(detector),
    )
    image = PIL.Image.fromarray(noise(90, 70, seed=0))

    encoded = processor(images=image, text="what is the man holding?")

    regions = processor.image_processor(image)
    count = int(regions["num_boxes"][0])
    by_features = processor(
        "what is the man holding?",
        regions["visual_feats"][:, :count],
        regions["boxes"][:, :count],
        image_sizes=[[70, 90]],
    )
    assert set(encoded) == MODEL_INPUT_NAMES
    assert encoded["visual_feats"].shape == (1, 36, 2048)
    assert encoded["visual_attention_mask"].sum() == count
    for name in MODEL_INPUT_NAMES:
        assert torch.allclose(encoded[name].float(), by_features[name].float(), atol=1e-4), name
    model = LxmertSForQuestionAnswering(tiny_config(visual_feat_dim=2048, num_qa_labels=5)).eval()
    with torch.no_grad():
        logits = model(**encoded).logits
    assert logits.shape == (1, 5) and torch.isfinite(logits).all()


# A processor folder read where neither this package nor the detector is installed: transformers alone.
ISOLATED_PROCESSOR_LOAD = """
import sys
sys.modules["modeling_lxmert_s"] = sys.modules["lxmert_s_msp"] = sys.modules["faster_rcnn_vg"] = None
from transformers import AutoProcessor

processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
assert type(processor).__name__ == "LxmertSProcessor" and processor.image_processor is None
print(processor("what is the man holding?")["input_ids"].tolist())
"""


def test_a_saved_processor_holds_no_detector_path_or_device_and_loads_with_transformers_alone(tmp_path):
    from tiny_detector import noise, save_tiny_detector

    from faster_rcnn_vg import FasterRcnnVgImageProcessor

    detector = save_tiny_detector(tmp_path / "detector")
    tokenizer = wordpiece_tokenizer_from_vocabulary(["what", "is", "the", "man", "holding", "?"])
    processor = LxmertSProcessor(
        tokenizer, image_processor=FasterRcnnVgImageProcessor(detector, device="cpu")
    )
    image = PIL.Image.fromarray(noise(90, 70, seed=0))
    encoded = processor(images=image, text="what is the man holding?")

    processor.save_pretrained(tmp_path / "processor")

    saved = (tmp_path / "processor" / "processor_config.json").read_text()
    assert str(tmp_path) not in saved and "device" not in saved and "image_processor" not in saved
    assert LxmertSProcessor.from_pretrained(tmp_path / "processor").image_processor is None
    with_detector = LxmertSProcessor.from_pretrained(
        tmp_path / "processor", image_processor=FasterRcnnVgImageProcessor(detector)
    )
    assert torch.equal(
        with_detector(images=image, text="what is the man holding?")["visual_pos"], encoded["visual_pos"]
    )
    script = tmp_path / "load.py"
    script.write_text(ISOLATED_PROCESSOR_LOAD)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "processor")],
        cwd=outside,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(encoded["input_ids"].tolist())


def test_a_truncated_image_is_named_by_its_place_in_the_batch(tmp_path):
    from tiny_detector import jpeg_bytes, save_tiny_detector

    from faster_rcnn_vg import BadImageError, FasterRcnnVgImageProcessor

    processor = LxmertSProcessor(
        wordpiece_tokenizer_from_vocabulary(VOCABULARY),
        image_processor=FasterRcnnVgImageProcessor(save_tiny_detector(tmp_path / "detector")),
    )
    whole = jpeg_bytes(64, 64, seed=0)
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) * 2 // 3])
    image = PIL.Image.open(tmp_path / "cut.jpg")  # opens lazily: the missing bytes show when it is decoded

    with pytest.raises(
        BadImageError, match=r"^images\[0\]: not a readable image \(OSError: image file is trunc"
    ):
        processor(images=image, text="a man")


def test_the_processor_masks_the_regions_an_adaptive_detector_did_not_find(tmp_path):
    from tiny_detector import noise, one_class_ahead_detector, save_tiny_detector

    from faster_rcnn_vg import FasterRcnnVgImageProcessor

    image_processor = FasterRcnnVgImageProcessor(
        save_tiny_detector(tmp_path / "detector", one_class_ahead_detector()), num_regions="adaptive"
    )
    processor = LxmertSProcessor(
        wordpiece_tokenizer_from_vocabulary(VOCABULARY), num_regions=100, image_processor=image_processor
    )
    images = [PIL.Image.fromarray(noise(64, 64, seed=0)), PIL.Image.fromarray(noise(200, 80, seed=1))]

    encoded = processor(images=images, text=["a man", "blue sky"])

    counts = image_processor(images)["num_boxes"]
    assert counts[0] != counts[1] and (counts >= 10).all()
    assert encoded["visual_attention_mask"].sum(dim=1).tolist() == counts.tolist()
    for image, count in enumerate(counts):
        assert (
            encoded["visual_feats"][image, count:].eq(0).all()
            and encoded["visual_pos"][image, count:].eq(0).all()
        )


def test_images_need_an_image_processor(processor):
    with pytest.raises(ValueError, match="images: this processor has no image_processor"):
        processor(images=PIL.Image.new("RGB", (64, 64)), text="a man")
