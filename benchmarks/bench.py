"""Training-step throughput: LXMERT-S against transformers' LXMERT cut to the same encoder.

    python benchmarks/bench.py                                          # CPU, small batch
    python benchmarks/bench.py --device cuda --bf16 --batch-size 1024   # one GPU
    python benchmarks/bench.py --device cuda --bf16 --batch-size 1024 --compile
    python benchmarks/bench.py --models lxmert-s lxmert-s-flm lxmert-s-mlm-flm          # FLM's step-time cost
    python benchmarks/bench.py --models lxmert-s lxmert-s-align                  # the alignment tasks' cost
    python benchmarks/bench.py --models lxmert-s lxmert-s-unchecked              # the input checks' cost
    python benchmarks/bench.py --models lxmert-s lxmert-s-flm --hidden-size 128 --num-layers 2 \
        --intermediate-size 512 --num-attention-heads 4 --batch-size 64   # the synthetic curricula's size

Both models get the same random batch (20 text tokens, 36 regions) and the same tasks: MLM, ITM and
the region heads (feature regression, object and attribute classification); `lxmert-s-flm` replaces
MLM with FLM and `lxmert-s-mlm-flm` trains both. `lxmert-s-align` trains the alignment tasks instead of ITM
(VSC, WPG, and ITM on negatives mined with VSC, `itm_vsc`, with the alignment pooler), as a stage with them
does: every row is a matched pair of distinct images, and the model encodes one negative pair per row in a
second pass, the cost this variant shows beside the plain MSP step (`lxmert-s`). `lxmert-s-unchecked` is
`lxmert-s` without the device-side checks of input and label values (`config.check_input_values=False`),
so the two give those checks' cost. A step is forward, backward and an AdamW update. Each model runs in a
fresh process so that peak memory is its own: peak GPU memory allocated on CUDA, peak resident memory of the
process on the CPU.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time

import torch
from transformers import LxmertConfig, LxmertForPreTraining

from modeling_lxmert_s import LxmertSConfig, LxmertSForPreTraining


def make_batch(config: LxmertSConfig, batch: int, length: int, regions: int, device: str) -> dict:
    """A fixed-shape batch with labels in both models' conventions (15% of tokens and regions chosen)."""
    generator = torch.Generator().manual_seed(0)
    # word ids past the special tokens: BERT's first 1,000 ids are special or unused, a small vocabulary's few
    first_word = 1000 if config.vocab_size > 2000 else 5
    input_ids = torch.randint(first_word, config.vocab_size, (batch, length), generator=generator)
    chosen_tokens = torch.rand(batch, length, generator=generator) < 0.15
    chosen_regions = torch.rand(batch, regions, generator=generator) < 0.15
    tensors = {
        "input_ids": input_ids,
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
        "position_ids": torch.arange(length).expand(batch, length).contiguous(),
        "visual_feats": torch.rand(batch, regions, config.visual_feat_dim, generator=generator),
        "visual_pos": torch.rand(batch, regions, 4, generator=generator),
        "mlm_labels": torch.where(chosen_tokens, input_ids, -100),
        "itm_labels": torch.randint(0, 2, (batch,), generator=generator),
        "region_mask": chosen_regions,
        "object_labels": torch.randint(0, config.num_object_labels, (batch, regions), generator=generator),
        "attribute_labels": torch.randint(0, config.num_attr_labels, (batch, regions), generator=generator),
        "confidences": torch.rand(batch, regions, generator=generator),
    }
    return {name: tensor.to(device) for name, tensor in tensors.items()}


# LXMERT-S variants: their tasks beside the region heads (MRFR, MOC), and their config overrides.
VARIANTS = {
    "lxmert-s": (("mlm", "itm"), {}),
    "lxmert-s-flm": (("flm", "itm"), {}),
    "lxmert-s-mlm-flm": (("mlm", "flm", "itm"), {}),
    "lxmert-s-align": (("mlm", "vsc", "wpg", "itm_vsc"), {"pooler_type": "alignment"}),
    "lxmert-s-unchecked": (("mlm", "itm"), {"check_input_values": False}),
}


def ours_step_inputs(batch: dict, tasks: tuple[str, ...]) -> dict:
    """LXMERT-S's inputs; FLM predicts every word of the unmasked text (position 0 stands for [CLS]). The
    alignment tasks take matched rows of distinct images (`image_ids`), as their collator pieces give, and
    WPG's concept words are the MLM-chosen ones (15%, a stand-in for the words naming a detector class)."""
    labels = {}
    if "mlm" in tasks:
        labels["mlm_labels"] = batch["mlm_labels"]
    if "flm" in tasks:
        labels["flm_labels"] = batch["input_ids"].clone()
        labels["flm_labels"][:, 0] = -100
    if "itm" in tasks:
        labels["itm_labels"] = batch["itm_labels"]
    if "itm_vsc" in tasks:
        labels["itm_labels"] = torch.ones_like(batch["itm_labels"])
    if {"vsc", "wpg", "itm_vsc"} & set(tasks):
        labels["image_ids"] = torch.arange(len(batch["input_ids"]), device=batch["input_ids"].device)
    if "vsc" in tasks:
        labels["vsc_labels"] = labels["image_ids"]
    if "wpg" in tasks:
        labels["wpg_concept_mask"] = batch["mlm_labels"] != -100
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "position_ids": batch["position_ids"],
        "visual_feats": batch["visual_feats"],
        "visual_pos": batch["visual_pos"],
        **labels,
        "region_mask": batch["region_mask"],
        "mrfr_labels": batch["visual_feats"],
        "moc_object_labels": batch["object_labels"],
        "moc_object_confidences": batch["confidences"],
        "moc_attribute_labels": batch["attribute_labels"],
        "moc_attribute_confidences": batch["confidences"],
    }


def lxmert_step_inputs(batch: dict) -> dict:
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "visual_feats": batch["visual_feats"],
        "visual_pos": batch["visual_pos"],
        "labels": batch["mlm_labels"],
        "matched_label": batch["itm_labels"],
        "obj_labels": {
            "obj": (batch["object_labels"], batch["confidences"]),
            "attr": (batch["attribute_labels"], batch["confidences"]),
            "feat": (batch["visual_feats"], batch["region_mask"].float()),
        },
    }


def build(name: str, sizes: dict[str, int]) -> tuple[torch.nn.Module, LxmertSConfig]:
    if name in VARIANTS:
        tasks, overrides = VARIANTS[name]
        config = LxmertSConfig(**sizes, **overrides, pretraining_tasks=[*tasks, "mrfr", "moc"])
        return LxmertSForPreTraining(config), config
    if sizes:
        raise SystemExit("the size options apply to the LXMERT-S models only")
    config = LxmertSConfig(pretraining_tasks=["mlm", "mrfr", "moc", "itm"])
    reference = LxmertConfig(l_layers=0, r_layers=0, x_layers=config.num_layers, task_qa=False)
    return LxmertForPreTraining(reference), config


def measure(name: str, args: argparse.Namespace) -> tuple[float, int, float]:
    """Samples/s, peak bytes and the last loss of `args.steps` timed steps after warm-up."""
    torch.manual_seed(0)
    device = args.device
    sizes = {
        key: value
        for key in ("hidden_size", "num_layers", "intermediate_size", "num_attention_heads", "vocab_size")
        if (value := getattr(args, key)) is not None
    }
    model, config = build(name, sizes)
    model.to(device).train()
    batch = make_batch(config, args.batch_size, args.text_length, args.regions, device)
    inputs = ours_step_inputs(batch, VARIANTS[name][0]) if name in VARIANTS else lxmert_step_inputs(batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    forward = torch.compile(model) if args.compile else model

    def step() -> torch.Tensor:
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = forward(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    def synchronize() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    synchronize()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    synchronize()
    elapsed = time.perf_counter() - start
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return args.batch_size * args.steps / elapsed, peak, loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--text-length", type=int, default=20)
    parser.add_argument("--regions", type=int, default=36)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--hidden-size", type=int, help="LXMERT-S only; default LXMERT's 768")
    parser.add_argument("--num-layers", type=int, help="LXMERT-S only; default 5")
    parser.add_argument("--intermediate-size", type=int, help="LXMERT-S only; default 3072")
    parser.add_argument("--num-attention-heads", type=int, help="LXMERT-S only; default 12")
    parser.add_argument("--vocab-size", type=int, help="LXMERT-S only; default BERT's 30522")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument(
        "--models",
        nargs="+",
        default=["lxmert-s", "transformers-lxmert"],
        choices=[*VARIANTS, "transformers-lxmert"],
    )
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    results = {}
    for name in args.models:
        with context.Pool(1) as pool:
            results[name] = pool.apply(measure, (name, args))
    memory = "peak GPU memory" if args.device.startswith("cuda") else "peak process RSS"
    print(
        f"device={args.device} batch={args.batch_size} text={args.text_length} regions={args.regions} "
        f"bf16={args.bf16} compile={args.compile} steps={args.steps} (after {args.warmup} warm-up)"
    )
    for name, (rate, peak, loss) in results.items():
        print(f"{name:>20}: {rate:10.1f} samples/s   {memory} {peak / 2**30:6.2f} GiB   last loss {loss:.3f}")
    if len(results) == 2:
        (_, (ours, ours_peak, _)), (_, (theirs, their_peak, _)) = results.items()
        print(f"{'ratio':>20}: {ours / theirs:10.2f}x speed   {ours_peak / their_peak:.2f}x memory")


if __name__ == "__main__":
    main()
