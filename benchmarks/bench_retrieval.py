"""Retrieval scoring throughput: every image against every caption through `score_all_pairs`, and two-stage.

    python benchmarks/bench_retrieval.py                                # CPU, LXMERT-S size, 20 x 100 pairs
    python benchmarks/bench_retrieval.py --hidden-size 128 --layers 2 --images 100 --captions 500 # default
    python benchmarks/bench_retrieval.py --hidden-size 128 --layers 2 --images 100 --captions 500 \
        --rerank-top-k 16                                               # and two-stage, top 16 re-ranked
    python benchmarks/bench_retrieval.py --device cuda --bf16 --images 200 --captions 1000 --batch-size 4096

A cross-modal encoder scores each (image, caption) pair with one forward pass, so this is the cost of a
Flickr30k test evaluation (1,000 x 5,000 pairs) scaled down. With --rerank-top-k K it also times two-stage
retrieval (`lxmert_s_msp.evaluation.retrieval`): the VSC similarity of every pair (one matrix product), then
ITM on each caption's top K images and each image's top K captions, K x (images + captions) passes. Images and
captions come from the default synthetic world (1,000 images, 4,000 training captions; generated into --world
once); the model has random weights (the speed does not depend on them).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.evaluation.retrieval import (
    EncodedSplit,
    contrastive_similarity,
    itm_match_scorer,
    rerank,
    score_all_pairs,
    score_pairs,
)
from lxmert_s_msp.training.stage_data import PretrainingData
from modeling_lxmert_s import LxmertSConfig, LxmertSForPreTraining


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--world", type=Path, default=Path("outputs/bench-world"))
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--captions", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--hidden-size", type=int, default=768)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument(
        "--rerank-top-k", type=int, metavar="K", help="also time two-stage retrieval re-ranking the top K"
    )
    args = parser.parse_args(argv)

    data = PretrainingData.open(generate_world(args.world, WorldSettings()))
    captions = data.corpus("captions")["text"][: args.captions]
    if args.images > len(data.store) or len(captions) < args.captions:
        parser.error(f"at most {len(data.store)} images and {len(captions)} captions")
    config = LxmertSConfig(
        **data.model_sizes(),
        hidden_size=args.hidden_size,
        num_attention_heads=max(1, args.hidden_size // 64),
        intermediate_size=4 * args.hidden_size,
        num_layers=args.layers,
        pretraining_tasks=["itm", "vsc"] if args.rerank_top_k else ["itm"],
    )
    model = LxmertSForPreTraining(config).to(args.device).eval()
    score = itm_match_scorer(model)
    dtype = torch.bfloat16 if args.bf16 else None

    processor = data.processor(20)  # LXMERT's caption length

    def run(images: int) -> float:
        start = time.perf_counter()
        score_all_pairs(
            score, data.store, processor, list(range(images)), captions, args.device, args.batch_size, dtype
        )
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def run_two_stage(images: int) -> float:
        start = time.perf_counter()
        split = EncodedSplit.encode(data.store, processor, list(range(images)), captions, args.device)
        similarity = contrastive_similarity(model, split, args.batch_size)

        def rescore(image: torch.Tensor, caption: torch.Tensor) -> torch.Tensor:
            return score_pairs(score, split, image, caption, args.batch_size, dtype)

        rerank(similarity.T, args.rerank_top_k, lambda caption, image: rescore(image, caption))
        rerank(similarity, args.rerank_top_k, rescore)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    run(1)  # warm-up: allocator, kernels
    seconds = run(args.images)
    pairs = args.images * len(captions)
    print(
        f"{pairs:,} pairs ({args.images} images x {len(captions)} captions), hidden {args.hidden_size}, "
        f"{args.layers} layers, batch {args.batch_size}, {args.device}{' bf16' if args.bf16 else ''}, "
        f"{torch.get_num_threads()} threads: {seconds:.1f} s, {pairs / seconds:,.0f} pairs/s"
    )
    if args.rerank_top_k:
        two_stage = run_two_stage(args.images)
        passes = min(args.rerank_top_k, args.images) * len(captions)
        passes += min(args.rerank_top_k, len(captions)) * args.images
        print(
            f"two-stage, top {args.rerank_top_k} re-ranked by ITM ({passes:,} ITM passes after the "
            f"contrastive ranking): {two_stage:.1f} s, {seconds / two_stage:.1f}x faster than every pair"
        )


if __name__ == "__main__":
    main()
