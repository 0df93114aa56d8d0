"""Measure region extraction speed with the default (ResNet-101, bottom-up attention) detector.

    python benchmarks/bench_extract.py --images 3 --batch-size 1 --device cpu

The published weights cannot be downloaded here, so the detector has random weights: the computation is the
same (every image still yields `rpn_post_nms_topk` proposals through res5; the proposal count is reported to
check it). Images are 640x480 noise (COCO's usual size), resized to the default 600 px shorter side (800x600).
One warm-up batch, then `--images` images timed end to end through `FasterRcnnVgImageProcessor`
(preprocessing, backbone, RPN, res5 on every proposal, per-class NMS), plus the backbone + RPN alone.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np
import PIL.Image
import torch

from faster_rcnn_vg import FasterRcnnVgConfig, FasterRcnnVgDetector, FasterRcnnVgImageProcessor
from faster_rcnn_vg.image_processing_faster_rcnn_vg import detector_input


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    config = FasterRcnnVgConfig()
    rng = np.random.default_rng(0)
    images = [
        PIL.Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) for _ in range(args.images)
    ]
    with tempfile.TemporaryDirectory() as folder:
        FasterRcnnVgDetector(config).save_pretrained(folder)
        processor = FasterRcnnVgImageProcessor(folder, device=args.device)
        model = processor.model
        processor(images[: args.batch_size])  # warm-up

        inputs = [detector_input(image, config, "bench", 10).to(args.device) for image in images]
        start = time.perf_counter()
        with torch.no_grad():
            proposals = [len(model.rpn(model.backbone(x[None]), tuple(x.shape[-2:]))) for x in inputs]
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
        f"end to end:     {seconds:.2f} s/image = {1 / seconds:.3f} images/s (batch size {args.batch_size})"
    )
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")


if __name__ == "__main__":
    main()
