import math

import numpy as np
import PIL.Image
import pytest
import torch
from tiny_detector import TINY_DETECTOR, draw_images, one_class_ahead_detector, tiny_detector
from torchvision.ops import nms

from faster_rcnn_vg import BadImageError, DetectorNotFoundError, FasterRcnnVgConfig, FasterRcnnVgDetector
from faster_rcnn_vg.configuration_faster_rcnn_vg import RegionLimits
from faster_rcnn_vg.image_processing_faster_rcnn_vg import detector_input, open_image
from faster_rcnn_vg.modeling_faster_rcnn_vg import class_nms_confidence, map_published_key, regions_to_keep

# The published checkpoint (`unc-nlp/frcnn-vg-finetuned`, converted from py-bottom-up-attention's
# `faster_rcnn_from_caffe_attr.pkl`), from the references, not from this package's config:
# - key names: transformers' `examples/research_projects/lxmert/modeling_frcnn.py` (the demo that loads this
#   checkpoint with a strict `load_state_dict`): `backbone.stem.conv1` and `backbone.res{2,3,4}.{i}` /
#   `roi_heads.res5.{i}` blocks with `conv{1,2,3}` and, in each stage's first block, `shortcut`, each with a
#   `.norm` (`BatchNorm2d`: weight, bias, running_mean, running_var, num_batches_tracked);
#   `proposal_generator.anchor_generator.cell_anchors.0` (a ParameterList); `proposal_generator.rpn_head.
#   {conv, objectness_logits, anchor_deltas}`; `roi_heads.box_predictor.{cls_score, bbox_pred, cls_embedding,
#   fc_attr, attr_score}`.
# - ResNet-101: the demo's `num_blocks_per_stage = {101: [3, 4, 23, 3]}`, stem 64 channels, res2 256 out and
#   64 bottleneck channels, both doubling per stage (`build_backbone`, `_build_res5_block`); Caffe's
#   test.prototxt (models/vg/ResNet-101/faster_rcnn_end2end_final) has the same 64/256/1024/2048 outputs.
# - RPN: `rpn_conv/3x3` num_output 512 (test.prototxt; `HID_CHANNELS: 512` in
#   configs/VG-Detection/faster_rcnn_R_101_C4_attr_caffemaxpool.yaml); 12 anchors: `rpn_cls_score` num_output
#   24 = 2 x 12 and `rpn_bbox_pred` 48 = 4 x 12 (test.prototxt, scales 4, 8, 16, 32 at feat_stride 16), i.e.
#   `SIZES: [[64, 128, 256, 512]]` x `ASPECT_RATIOS` 0.5, 1, 2 (the yaml); one objectness logit per anchor in
#   Detectron's head (`num_cell_anchors` outputs), anchors by the demo's `generate_cell_anchors`.
# - predictor: `NUM_CLASSES: 1600`, `NUM_ATTRS: 400` (the yaml) plus background; `FastRCNNOutputLayers`:
#   cls_embedding (classes + 1, 2048 // 8), fc_attr (2048 // 4, 2048 + 2048 // 8), attr_score (attrs + 1,
#   512).
PUBLISHED = {
    "blocks": (3, 4, 23, 3),
    "stem_channels": 64,
    "bottleneck_channels": 64,
    "res2_channels": 256,
    "rpn_channels": 512,
    "anchor_sizes": (64, 128, 256, 512),
    "aspect_ratios": (0.5, 1.0, 2.0),
    "classes": 1600,
    "attributes": 400,
}


def demo_cell_anchors(sizes, aspect_ratios) -> torch.Tensor:
    """The demo's `AnchorGenerator.generate_cell_anchors`, which wrote the checkpoint's `cell_anchors.0`."""
    anchors = []
    for size in sizes:
        for aspect_ratio in aspect_ratios:
            w = math.sqrt(size**2.0 / aspect_ratio)
            h = aspect_ratio * w
            anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(anchors)


def detectron_layout(
    blocks, stem_channels, bottleneck_channels, res2_channels, rpn_channels, anchor_sizes, aspect_ratios,
    classes, attributes,
) -> dict[str, tuple[int, ...]]:  # fmt: skip
    """Key -> shape of a checkpoint in the demo's layout (`PUBLISHED` gives the published one's arguments)."""
    layout = {"backbone.stem.conv1.weight": (stem_channels, 3, 7, 7)}

    def norm(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{prefix}.norm.{name}"] = (channels,)
        layout[f"{prefix}.norm.num_batches_tracked"] = ()

    norm("backbone.stem.conv1", stem_channels)
    in_channels, width, out_channels = stem_channels, bottleneck_channels, res2_channels
    for stage, count in zip((2, 3, 4, 5), blocks, strict=True):
        prefix = "roi_heads.res5" if stage == 5 else f"backbone.res{stage}"
        for block in range(count):
            block_in = in_channels if block == 0 else out_channels
            shapes = {
                "conv1": (width, block_in, 1, 1),
                "conv2": (width, width, 3, 3),
                "conv3": (out_channels, width, 1, 1),
            }
            if block == 0:
                shapes["shortcut"] = (out_channels, block_in, 1, 1)
            for conv, shape in shapes.items():
                layout[f"{prefix}.{block}.{conv}.weight"] = shape
                norm(f"{prefix}.{block}.{conv}", shape[0])
        in_channels, width, out_channels = out_channels, width * 2, out_channels * 2
    anchors, features = len(anchor_sizes) * len(aspect_ratios), in_channels
    rpn_in = features // 2  # C4, the stage before res5
    layout.update(
        {
            "proposal_generator.anchor_generator.cell_anchors.0": (anchors, 4),
            "proposal_generator.rpn_head.conv.weight": (rpn_channels, rpn_in, 3, 3),
            "proposal_generator.rpn_head.conv.bias": (rpn_channels,),
            "proposal_generator.rpn_head.objectness_logits.weight": (anchors, rpn_channels, 1, 1),
            "proposal_generator.rpn_head.objectness_logits.bias": (anchors,),
            "proposal_generator.rpn_head.anchor_deltas.weight": (anchors * 4, rpn_channels, 1, 1),
            "proposal_generator.rpn_head.anchor_deltas.bias": (anchors * 4,),
            "roi_heads.box_predictor.cls_score.weight": (classes + 1, features),
            "roi_heads.box_predictor.cls_score.bias": (classes + 1,),
            "roi_heads.box_predictor.bbox_pred.weight": (classes * 4, features),
            "roi_heads.box_predictor.bbox_pred.bias": (classes * 4,),
            "roi_heads.box_predictor.cls_embedding.weight": (classes + 1, features // 8),
            "roi_heads.box_predictor.fc_attr.weight": (features // 4, features + features // 8),
            "roi_heads.box_predictor.fc_attr.bias": (features // 4,),
            "roi_heads.box_predictor.attr_score.weight": (attributes + 1, features // 4),
            "roi_heads.box_predictor.attr_score.bias": (attributes + 1,),
        }
    )
    return layout


def published_state_dict() -> dict[str, torch.Tensor]:
    """The published layout as tensors: its anchors' values, the rest only shapes (on the meta device)."""
    with torch.device("meta"):
        state = {key: torch.empty(shape) for key, shape in detectron_layout(**PUBLISHED).items()}
    state["proposal_generator.anchor_generator.cell_anchors.0"] = demo_cell_anchors(
        PUBLISHED["anchor_sizes"], PUBLISHED["aspect_ratios"]
    )
    return state


def test_the_published_checkpoint_layout_loads_strictly_into_the_default_config():
    layout = detectron_layout(**PUBLISHED)
    # 6 keys a convolution (weight, norm x 5): stem, 3 per block of 33, 4 shortcuts; anchors, RPN, predictors
    assert len(layout) == 6 * (1 + 3 * 33 + 4) + 1 + 6 + 9
    assert layout["backbone.res4.22.conv3.weight"] == (1024, 256, 1, 1)
    assert layout["roi_heads.res5.0.shortcut.weight"] == (2048, 1024, 1, 1)
    assert layout["proposal_generator.rpn_head.objectness_logits.weight"] == (12, 512, 1, 1)
    assert layout["proposal_generator.rpn_head.anchor_deltas.weight"] == (48, 512, 1, 1)
    with torch.device("meta"):
        model = FasterRcnnVgDetector(FasterRcnnVgConfig())

    # every key maps and fills a parameter of its shape, the anchors are the config's; the load is strict
    model.load_published_state_dict(published_state_dict())


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"anchor_sizes": [32, 64, 128, 256, 512]},  # the default before it was corrected
            r"proposal_generator\.anchor_generator\.cell_anchors\.0: shape \(12, 4\) in the checkpoint, "
            r"\(15, 4\) in a detector of this config \(e\.g\. 15 anchors",
        ),
        (
            {"num_object_classes": 1599},
            r"roi_heads\.box_predictor\.cls_score\.weight: shape \(1601, 2048\) in the checkpoint, "
            r"\(1600, 2048\) in a detector of this config",
        ),
    ],
)
def test_a_shape_mismatch_names_the_checkpoint_key_and_both_shapes(config, message):
    with torch.device("meta"):
        model = FasterRcnnVgDetector(FasterRcnnVgConfig(**config))
    with pytest.raises(ValueError, match=message):
        model.load_published_state_dict(published_state_dict())


def tiny_published_facts(config: FasterRcnnVgConfig) -> dict:
    return {
        **PUBLISHED,
        "blocks": tuple(config.resnet_layers),
        "bottleneck_channels": config.width_per_group,
        "rpn_channels": config.rpn_hidden_channels,
        "anchor_sizes": tuple(config.anchor_sizes),
        "classes": config.num_object_classes,
        "attributes": config.num_attribute_classes,
    }


def test_published_checkpoint_loads_every_value_into_its_place(tmp_path):
    config = FasterRcnnVgConfig(**TINY_DETECTOR)
    generator = torch.Generator().manual_seed(0)
    state = {
        key: torch.randn(shape, generator=generator) if shape else torch.tensor(0)
        for key, shape in detectron_layout(**tiny_published_facts(config)).items()
    }
    state["proposal_generator.anchor_generator.cell_anchors.0"] = demo_cell_anchors(
        config.anchor_sizes, config.anchor_aspect_ratios
    )
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.yaml").write_text("MODEL:\n  DEVICE: cpu\n")  # Detectron's, not read

    model = FasterRcnnVgDetector.from_pretrained(tmp_path, **TINY_DETECTOR)

    loaded = model.state_dict()
    for published, ours in {
        "backbone.stem.conv1.weight": "backbone.conv1.weight",
        "backbone.stem.conv1.norm.running_var": "backbone.bn1.running_var",
        "backbone.res2.0.conv3.weight": "backbone.layer1.0.conv3.weight",
        "backbone.res3.0.shortcut.norm.running_mean": "backbone.layer2.0.downsample.1.running_mean",
        "backbone.res4.0.conv2.norm.bias": "backbone.layer3.0.bn2.bias",
        "roi_heads.res5.0.shortcut.weight": "head.res5.0.downsample.0.weight",
        "roi_heads.res5.0.conv1.norm.weight": "head.res5.0.bn1.weight",
        "proposal_generator.rpn_head.anchor_deltas.bias": "rpn.anchor_deltas.bias",
        "roi_heads.box_predictor.cls_embedding.weight": "head.cls_embedding.weight",
        "roi_heads.box_predictor.attr_score.weight": "head.attr_score.weight",
    }.items():
        assert torch.equal(loaded[ours], state[published]), published
    assert not model.training


def test_published_checkpoint_with_other_anchors_or_an_unknown_key_is_refused():
    config = FasterRcnnVgConfig(**TINY_DETECTOR)
    facts = tiny_published_facts(config)
    state = {key: torch.zeros(shape) for key, shape in detectron_layout(**facts).items()}
    model = FasterRcnnVgDetector(config)
    with pytest.raises(ValueError, match="cell_anchors.0: the checkpoint's anchors differ"):
        model.load_published_state_dict(state)
    with pytest.raises(KeyError, match="roi_heads.box_predictor_extra.weight: not a key"):
        map_published_key("roi_heads.box_predictor_extra.weight")


def test_the_detector_names_what_it_cannot_load_and_how_to_get_it(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"not a folder")
    with pytest.raises(DetectorNotFoundError, match=r"weights\.bin: a file, not a detector: give the folder"):
        FasterRcnnVgDetector.from_pretrained(tmp_path / "weights.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DetectorNotFoundError, match=r"empty: this folder holds neither config\.json"):
        FasterRcnnVgDetector.from_pretrained(tmp_path / "empty")


def test_anchors_follow_detectron_size_major_order():
    anchors = tiny_detector(anchor_sizes=[32, 64, 128, 256, 512]).rpn.cell_anchors
    # size 32 at height/width 0.5: width sqrt(32^2 / 0.5), height half of it; then size 32 at ratio 1
    half_width = math.sqrt(32**2 / 0.5) / 2
    assert torch.allclose(
        anchors[0], torch.tensor([-half_width, -half_width / 2, half_width, half_width / 2])
    )
    assert torch.allclose(anchors[1], torch.tensor([-16.0, -16.0, 16.0, 16.0]))


@pytest.mark.parametrize("input_format", ["BGR", "RGB"])
def test_preprocessing_gives_the_channel_order_and_means_the_config_declares(input_format):
    config = FasterRcnnVgConfig(**TINY_DETECTOR, input_format=input_format)
    red = PIL.Image.new("RGB", (120, 80), (255, 0, 0))

    pixels = detector_input(red, config, "red.png", min_side=10)

    assert pixels.shape == (3, 64, 96)  # shorter side to 64; 96 fits the longest edge
    red_channel = input_format.index("R")
    expected = torch.tensor([255.0 if channel == red_channel else 0.0 for channel in range(3)])
    expected -= torch.tensor(config.pixel_mean)
    assert torch.allclose(pixels.mean(dim=(1, 2)), expected, atol=1e-3)


def test_default_preprocessing_is_bgr_with_the_caffe_means():
    config = FasterRcnnVgConfig()
    blue = PIL.Image.new("RGB", (600, 600), (0, 0, 200))
    pixels = detector_input(blue, config, "blue.png", min_side=10)
    assert torch.allclose(pixels[:, 0, 0], torch.tensor([200 - 102.9801, -115.9465, -122.7717]))


def test_class_nms_confidence_equals_torchvision_nms_per_class():
    generator = torch.Generator().manual_seed(1)
    corners = torch.rand(40, 2, 2, generator=generator).sort(dim=1).values * 100
    boxes = torch.cat([corners[:, 0], corners[:, 1]], dim=1)
    probs = torch.rand(40, 7, generator=generator).softmax(dim=-1)

    expected = torch.zeros(40)
    for cls in range(7):
        kept = nms(boxes, probs[:, cls], 0.3)
        expected[kept] = torch.maximum(expected[kept], probs[kept, cls])

    assert torch.equal(class_nms_confidence(boxes, probs, 0.3), expected)
    assert (expected == 0).any()  # some boxes survive no class: the test covers suppression


def test_regions_of_an_image_do_not_depend_on_the_rest_of_its_batch():
    model = tiny_detector()
    first, second = torch.randn(3, 64, 96) * 50, torch.randn(3, 96, 64) * 50

    together = model([first, second])
    alone = model([first])

    assert together.features.shape == (2, 10, 2048)
    assert torch.allclose(together.features[0], alone.features[0], atol=1e-4)
    assert torch.equal(together.boxes[0], alone.boxes[0])
    for image, (height, width) in enumerate([(64, 96), (96, 64)]):
        count = int(together.num_boxes[image])
        assert 1 <= count <= 10
        boxes = together.boxes[image, :count]
        assert (boxes[:, 2:] <= torch.tensor([width, height])).all() and (boxes[:, :2] <= boxes[:, 2:]).all()
        assert together.features[image, count:].eq(0).all()
        assert (together.object_ids[image, :count] < 6).all() and (
            together.attribute_ids[image, :count] < 4
        ).all()


def test_refined_boxes_move_the_proposals_by_the_object_class_regression():
    model = tiny_detector(shortest_edge=600, longest_edge=600)
    with torch.no_grad():
        model.head.bbox_pred.weight.zero_()
        # every class: width x exp(0.5 / 5), height x exp(-0.5 / 5), centre right by 0.1 x the width
        model.head.bbox_pred.bias.copy_(torch.tensor([1.0, 0.0, 0.5, -0.5]).repeat(6))
    output = model([torch.randn(3, 600, 600) * 50])

    box, refined = output.boxes[0, 0], output.refined_boxes[0, 0]
    width, height = box[2] - box[0], box[3] - box[1]
    centre = torch.stack([(box[0] + box[2]) / 2 + 0.1 * width, (box[1] + box[3]) / 2])
    half = torch.stack([width * math.exp(0.1), height * math.exp(-0.1)]) / 2
    expected = torch.cat([centre - half, centre + half]).clamp(min=0, max=600)
    assert torch.allclose(refined, expected, atol=1e-3)


def test_images_are_read_upright_and_in_rgb(tmp_path):
    sizes = draw_images(tmp_path)
    for path in [*tmp_path.glob("*.*"), *tmp_path.glob("nested/*")]:
        image = open_image(path)
        assert image.mode == "RGB"
        assert (image.height, image.width) == sizes[path.stem], path.name
    # Grayscale becomes three equal channels; the EXIF-rotated image is turned clockwise.
    gray = np.asarray(open_image(tmp_path / "gray_png.png"))
    assert (gray[..., 0] == gray[..., 2]).all()
    stored = np.asarray(PIL.Image.open(tmp_path / "exif_rotated.jpg"))
    assert (
        np.abs(np.asarray(open_image(tmp_path / "exif_rotated.jpg")).astype(int) - np.rot90(stored, -1)).max()
        < 2
    )


def test_unusable_images_are_refused_with_their_name(tmp_path):
    config = FasterRcnnVgConfig(**TINY_DETECTOR)
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(BadImageError, match=r"notes\.jpg: not a readable image"):
        open_image(tmp_path / "notes.jpg")
    with pytest.raises(BadImageError, match=r"pixel\.png: 1x1 pixels, smaller than 10"):
        detector_input(PIL.Image.new("RGB", (1, 1)), config, "pixel.png", min_side=10)
    with pytest.raises(BadImageError, match=r"strip\.png: 400x12 pixels is too elongated"):
        detector_input(PIL.Image.new("RGB", (400, 12)), config, "strip.png", min_side=10)


def thin_anchor_detector(**overrides) -> FasterRcnnVgDetector:
    """A tiny detector whose RPN prefers, everywhere, the anchor of size 16 at ratio 0.5 (22.6 x 11.3 pixels)
    and then the one of size 16 at ratio 1 (16 x 16); its deltas are zero, so proposals are anchors."""
    model = tiny_detector(**overrides)
    with torch.no_grad():
        model.rpn.objectness_logits.weight.zero_()
        model.rpn.objectness_logits.bias.copy_(torch.linspace(0, -1, len(model.rpn.cell_anchors)))
        model.rpn.objectness_logits.bias[:2] = torch.tensor([10.0, 9.0])
    return model


def test_the_rpn_drops_proposals_under_the_minimum_size_before_its_top_k():
    model = thin_anchor_detector(rpn_pre_nms_topk=40, rpn_post_nms_topk=12)
    image = torch.randn(1, 3, 96, 128) * 50
    c4 = model.backbone(image)

    proposals = model.rpn(c4, (96, 128), min_size=16.0)
    slivers = model.rpn(c4, (96, 128), min_size=8.0)

    sides = torch.stack([proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]], dim=1)
    assert (sides >= 16 - 1e-4).all()
    # filtered before the top 40 (all 11-pixel slivers otherwise), so NMS still fills every slot
    assert len(proposals) == 12
    assert (slivers[:, 3] - slivers[:, 1]).min() < 12  # at half the scale, 8 pixels: the slivers stay


def test_the_minimum_size_is_in_pixels_of_the_original_image(tmp_path):
    from faster_rcnn_vg import FasterRcnnVgImageProcessor
    from faster_rcnn_vg.image_processing_faster_rcnn_vg import load_detector

    model = thin_anchor_detector(rpn_pre_nms_topk=200, rpn_post_nms_topk=12)
    model.save_pretrained(tmp_path / "detector")
    load_detector.cache_clear()
    processor = FasterRcnnVgImageProcessor(str(tmp_path / "detector"))
    # 50 pixels high becomes 64 at the input: 16 original pixels are 20.5 there, so the 16 x 16 anchors go too
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))

    regions = processor(image)

    count = int(regions["num_boxes"][0])
    boxes = regions["boxes"][0, :count]
    assert (boxes[:, 2:] - boxes[:, :2] >= 16 - 0.1).all()


def test_regions_to_keep_follow_generate_tsv_within_the_limits():
    generator = torch.Generator().manual_seed(0)
    adaptive = RegionLimits(10, 100, 0.2)

    def confidences(above: int) -> torch.Tensor:
        values = torch.cat(
            [0.2 + 0.7 * torch.rand(above, generator=generator), 0.19 * torch.rand(150 - above)]
        )
        return values[torch.randperm(150, generator=generator)]

    some = confidences(40)
    kept = regions_to_keep(some, adaptive)
    assert sorted(kept.tolist()) == sorted(torch.nonzero(some >= 0.2).flatten().tolist())
    assert (some[kept].diff() <= 0).all()  # best first
    few = confidences(3)
    assert regions_to_keep(few, adaptive).tolist() == few.argsort(descending=True)[:10].tolist()
    many = confidences(130)
    assert regions_to_keep(many, adaptive).tolist() == many.argsort(descending=True)[:100].tolist()
    assert (
        regions_to_keep(some, RegionLimits(36, 36, 0.2)).tolist()
        == some.argsort(descending=True)[:36].tolist()
    )


def test_the_adaptive_mode_pads_to_100_and_counts_each_images_regions():
    model = one_class_ahead_detector()
    images = [torch.randn(3, 64, 96) * 50, torch.randn(3, 96, 96) * 50]

    output = model(images, num_regions="adaptive")
    fixed = model(images)

    assert output.features.shape == (2, 100, 2048) and fixed.features.shape == (2, 10, 2048)
    for image in range(2):
        count = int(output.num_boxes[image])
        confident = int((output.object_confidences[image] >= 0.2).sum())
        assert 10 <= count <= 100 and count == max(confident, 10)
        assert output.features[image, count:].eq(0).all() and output.boxes[image, count:].eq(0).all()
        assert torch.equal(output.boxes[image, :10], fixed.boxes[image])  # the same ranking, cut elsewhere
    assert output.num_boxes[0] != output.num_boxes[1]
    with pytest.raises(
        ValueError, match=r"num_regions 'adaptive': expected 1 <= 10 <= 100 .* at most the 12"
    ):
        tiny_detector()(images, num_regions="adaptive")


def test_folding_the_frozen_norms_into_the_convolutions_keeps_torchvisions_numbers():
    from torchvision.models.resnet import Bottleneck
    from torchvision.ops import FrozenBatchNorm2d

    model = tiny_detector()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for norm in model.modules():
            if isinstance(norm, FrozenBatchNorm2d):
                for buffer, low, high in [
                    ("weight", 0.5, 1.5),
                    ("bias", -0.2, 0.2),
                    ("running_mean", -0.2, 0.2),
                ]:
                    getattr(norm, buffer).uniform_(low, high, generator=generator)
                norm.running_var.uniform_(0.5, 2.0, generator=generator)
    regions = torch.randn(5, 1024, 4, 4, generator=generator).relu()

    expected = regions
    for block in model.head.res5:
        expected = Bottleneck.forward(block, expected)  # conv, then norm, as torchvision computes it

    assert torch.allclose(model.head.res5(regions), expected, rtol=1e-5, atol=1e-5)


def test_res5_in_chunks_and_in_bfloat16_keeps_the_features(monkeypatch):
    from faster_rcnn_vg import modeling_faster_rcnn_vg

    model = tiny_detector()
    images = [torch.randn(3, 64, 96) * 50, torch.randn(3, 96, 64) * 50]
    whole = model(images)
    monkeypatch.setattr(modeling_faster_rcnn_vg, "RES5_CHUNK", 5)

    chunked = model(images)
    bf16 = model(images, bf16=True)

    assert torch.allclose(chunked.features, whole.features, rtol=1e-5, atol=1e-4)
    assert bf16.features.dtype == torch.float32
    scale = whole.features.abs().max()
    same = bf16.boxes.eq(whole.boxes).all(dim=-1)  # regions chosen in both, in the same place
    assert same.any() and ((bf16.features - whole.features).abs()[same] <= 0.03 * scale).all()
