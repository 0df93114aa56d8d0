import math

import numpy as np
import PIL.Image
import pytest
import torch
from tiny_detector import TINY_DETECTOR, draw_images, tiny_detector
from torchvision.ops import nms

from faster_rcnn_vg import BadImageError, FasterRcnnVgConfig, FasterRcnnVgDetector
from faster_rcnn_vg.image_processing_faster_rcnn_vg import detector_input, open_image
from faster_rcnn_vg.modeling_faster_rcnn_vg import class_nms_confidence, map_published_state_dict


def published_layout(config: FasterRcnnVgConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the published `unc-nlp/frcnn-vg-finetuned` state dict (Detectron names)."""
    layout = {"backbone.stem.conv1.weight": (64, 3, 7, 7)}

    def norm(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{prefix}.norm.{name}"] = (channels,)

    norm("backbone.stem.conv1", 64)
    in_channels = 64
    for stage, blocks in zip((2, 3, 4, 5), config.resnet_layers, strict=True):
        width = 64 * 2 ** (stage - 2) * config.width_per_group // 64
        out_channels = 256 * 2 ** (stage - 2)
        prefix = "roi_heads.res5" if stage == 5 else f"backbone.res{stage}"
        for block in range(blocks):
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
        in_channels = out_channels
    anchors = len(config.anchor_sizes) * len(config.anchor_aspect_ratios)
    hidden, classes, attributes = (
        config.rpn_hidden_channels,
        config.num_object_classes,
        config.num_attribute_classes,
    )
    layout.update(
        {
            "proposal_generator.anchor_generator.cell_anchors.0": (anchors, 4),
            "proposal_generator.rpn_head.conv.weight": (hidden, 1024, 3, 3),
            "proposal_generator.rpn_head.conv.bias": (hidden,),
            "proposal_generator.rpn_head.objectness_logits.weight": (anchors, hidden, 1, 1),
            "proposal_generator.rpn_head.objectness_logits.bias": (anchors,),
            "proposal_generator.rpn_head.anchor_deltas.weight": (anchors * 4, hidden, 1, 1),
            "proposal_generator.rpn_head.anchor_deltas.bias": (anchors * 4,),
            "roi_heads.box_predictor.cls_score.weight": (classes + 1, 2048),
            "roi_heads.box_predictor.cls_score.bias": (classes + 1,),
            "roi_heads.box_predictor.bbox_pred.weight": (classes * 4, 2048),
            "roi_heads.box_predictor.bbox_pred.bias": (classes * 4,),
            "roi_heads.box_predictor.cls_embedding.weight": (classes + 1, 256),
            "roi_heads.box_predictor.fc_attr.weight": (512, 2048 + 256),
            "roi_heads.box_predictor.fc_attr.bias": (512,),
            "roi_heads.box_predictor.attr_score.weight": (attributes + 1, 512),
            "roi_heads.box_predictor.attr_score.bias": (attributes + 1,),
        }
    )
    return layout


def test_published_key_layout_fills_every_parameter_of_the_default_resnet101_detector():
    config = FasterRcnnVgConfig()
    layout = published_layout(config)
    # 5 keys a convolution (weight, norm x 4): stem, 3 per block of 33, 4 shortcuts; anchors, RPN, predictors
    assert len(layout) == 5 * (1 + 3 * 33 + 4) + 1 + 6 + 9
    with torch.device("meta"):
        model = FasterRcnnVgDetector(config)
        state = {key: torch.empty(shape) for key, shape in layout.items()}

    # strict: no key of either side left over; load_state_dict also refuses any shape that differs
    model.load_state_dict(map_published_state_dict(state), strict=True, assign=True)


def test_published_checkpoint_loads_every_value_into_its_place(tmp_path):
    config = FasterRcnnVgConfig(**TINY_DETECTOR)
    generator = torch.Generator().manual_seed(0)
    state = {key: torch.randn(shape, generator=generator) for key, shape in published_layout(config).items()}
    from faster_rcnn_vg.modeling_faster_rcnn_vg import cell_anchors

    state["proposal_generator.anchor_generator.cell_anchors.0"] = cell_anchors(config)
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
    state = {key: torch.zeros(shape) for key, shape in published_layout(config).items()}
    model = FasterRcnnVgDetector(config)
    with pytest.raises(ValueError, match="cell_anchors.0: the checkpoint's anchors differ"):
        model.load_published_state_dict(state)
    with pytest.raises(KeyError, match="roi_heads.box_predictor_extra.weight: not a key"):
        map_published_state_dict({"roi_heads.box_predictor_extra.weight": torch.zeros(1)})


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
