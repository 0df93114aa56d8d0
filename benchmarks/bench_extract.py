"""Measure region extraction speed with the default (ResNet-101, bottom-up attention) detector.

    OMP_NUM_THREADS=2 python benchmarks/bench_extract.py --images 2 --batch-size 1 --device cpu --compare

The published weights cannot be downloaded here, so the detector has random weights: the computation is the
same (every image still yields `rpn_post_nms_topk` proposals through res5; the proposal count is reported to
check it). Images are 640x480 noise (COCO's usual size), resized to the default 600 px shorter side (800x600).
One warm-up batch, then `--images` images timed end to end through `FasterRcnnVgImageProcessor`
(preprocessing, backbone, RPN, res5 on every proposal, per-class NMS), plus the backbone + RPN alone; `--bf16`
runs res5 in bfloat16.

`--compare` then runs res5 on each image's proposals three ways, timing each on the same regions:
torchvision's blocks in float32 with the norms apart (the computation before they were folded into the
convolutions), the folded blocks in float32 (the default), and in bfloat16; for the last two it reports the
largest feature difference from the first and whether the 36 regions chosen from their features change.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np
import PIL.Image
import torch
from torchvision.models.resnet import Bottleneck
from torchvision.ops import roi_pool

from faster_rcnn_vg import FasterRcnnVgConfig, FasterRcnnVgDetector, FasterRcnnVgImageProcessor
from faster_rcnn_vg.image_processing_faster_rcnn_vg import detector_input, resize_scale
from faster_rcnn_vg.modeling_faster_rcnn_vg import C4_STRIDE, class_nms_confidence, regions_to_keep

RES5_WAYS = ("float32, norms apart", "float32, norms folded", "bfloat16, norms folded")


def res5_features(model: FasterRcnnVgDetector, pooled: torch.Tensor, way: str) -> torch.Tensor:
    """(R, 2048) mean-pooled res5 outputs of pooled regions, computed one of the `RES5_WAYS`."""
    if way == RES5_WAYS[0]:
        out = pooled
        for block in model.head.res5:
            out = Bottleneck.forward(block, out)
        return out.mean(dim=(2, 3))
    with torch.autocast(pooled.device.type, dtype=torch.bfloat16, enabled=way == RES5_WAYS[2]):
        return model.head.res5(pooled).float().mean(dim=(2, 3))


def compare_res5(model: FasterRcnnVgDetector, inputs: list[torch.Tensor], scales: list[float]) -> None:
    config = model.config
    seconds = {way: 0.0 for way in RES5_WAYS}
    largest = {way: 0.0 for way in RES5_WAYS[1:]}
    changed = {way: 0 for way in RES5_WAYS[1:]}
    peak = 0.0
    for pixels, scale in zip(inputs, scales, strict=True):
        c4 = model.backbone(pixels[None])
        proposals = model.rpn(c4, tuple(pixels.shape[-2:]), config.rpn_min_size * scale)
        resolution = (config.pooler_resolution, config.pooler_resolution)
        pooled = roi_pool(c4, [proposals], resolution, spatial_scale=1 / C4_STRIDE)
        chosen, features = {}, {}
        for way in RES5_WAYS:
            start = time.perf_counter()
            features[way] = res5_features(model, pooled, way)
            seconds[way] += time.perf_counter() - start
            probs = model.head.cls_score(features[way]).softmax(dim=-1)[:, :-1]
            confidence = class_nms_confidence(proposals, probs, config.class_nms_threshold)
            chosen[way] = regions_to_keep(confidence, config.region_limits())
        reference = features[RES5_WAYS[0]][chosen[RES5_WAYS[0]]]
        peak = max(peak, reference.abs().max().item())
        for way in RES5_WAYS[1:]:
            largest[way] = max(
                largest[way], (features[way][chosen[RES5_WAYS[0]]] - reference).abs().max().item()
            )
            changed[way] += set(chosen[way].tolist()) != set(chosen[RES5_WAYS[0]].tolist())
    print(f"res5 on each image's {len(proposals)} proposals, three ways (largest |feature| {peak:.4g}):")
    for way in RES5_WAYS:
        line = f"  {way}: {seconds[way] / len(inputs):.2f} s/image"
        if way in largest:
            line += (
                f", max |feature difference| {largest[way]:.3g} ({largest[way] / peak:.2e} of the largest), "
                f"{changed[way]} of {len(inputs)} images choose other regions"
            )
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="time res5 in bfloat16")
    parser.add_argument("--compare", action="store_true", help="res5 three ways on the same regions")
    args = parser.parse_args()

    config = FasterRcnnVgConfig()
    rng = np.random.default_rng(0)
    images = [
        PIL.Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) for _ in range(args.images)
    ]
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        FasterRcnnVgDetector(config).save_pretrained(folder)
        processor = FasterRcnnVgImageProcessor(folder, device=args.device, bf16=args.bf16)
        model = processor.model
        processor(images[: args.batch_size])  # warm-up

        inputs = [detector_input(image, config, "bench", 10).to(args.device) for image in images]
        scales = [resize_scale(image.height, image.width, config) for image in images]
        start = time.perf_counter()
        with torch.inference_mode():
            proposals = [
                len(model.rpn(model.backbone(x[None]), tuple(x.shape[-2:]), config.rpn_min_size * scale))
                for x, scale in zip(inputs, scales, strict=True)
            ]
        backbone_seconds = (time.perf_counter() - start) / len(images)

        start = time.perf_counter()
        for first in range(0, len(images), args.batch_size):
            processor(images[first : first + args.batch_size])
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / len(images)

        print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(f"input {tuple(inputs[0].shape[1:])} pixels, proposals per image {proposals}")
        print(f"backbone + RPN: {backbone_seconds:.2f} s/image")
        print(
            f"end to end:     {seconds:.2f} s/image = {1 / seconds:.3f} images/s (batch size "
            f"{args.batch_size}, res5 in {'bfloat16' if args.bf16 else 'float32'})"
        )
        print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")
        if args.compare:
            with torch.inference_mode():
                compare_res5(model, inputs, scales)


if __name__ == "__main__":
    main()
