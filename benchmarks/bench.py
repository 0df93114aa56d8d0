"""Training-step throughput: LXMERT-S against transformers' LXMERT cut to the same encoder.

    python benchmarks/bench.py                                          # CPU, small batch
    python benchmarks/bench.py --device cuda --bf16 --batch-size 1024   # one GPU
    python benchmarks/bench.py --device cuda --bf16 --batch-size 1024 --compile
    python benchmarks/bench.py --models lxmert-s lxmert-s-flm lxmert-s-mlm-flm          # FLM's step-time cost
    python benchmarks/bench.py --models lxmert-s lxmert-s-align                  # the alignment tasks' cost
    python benchmarks/bench.py --models lxmert-s lxmert-s-unchecked              # the input checks' cost
    python benchmarks/bench.py --models lxmert-s-align lxmert-s-relations lxmert-s-rpt   # RPT's cost
    python benchmarks/bench.py --models lxmert-s lxmert-s-flm --hidden-size 128 --num-layers 2 \
        --intermediate-size 512 --num-attention-heads 4 --batch-size 64   # the synthetic curricula's size

Both models get the same batch: one caption of each of `--batch-size` images of the built-in synthetic world
(generated once in a temporary folder, `--regions` regions of 2,048-d features), collated by `MSPCollator` for
the model's tasks as a pre-training stage collates it, the text cut to `--text-length` tokens. The tasks: MLM,
ITM and the region heads (feature regression, object and attribute classification); `lxmert-s-flm` replaces
MLM with FLM and `lxmert-s-mlm-flm` trains both. `lxmert-s-align` trains the alignment tasks instead of ITM
(VSC, WPG, and ITM on negatives mined with VSC, `itm_vsc`, with the alignment pooler), as a stage with them
does: every row is a matched pair of distinct images, and the model encodes one negative pair per row in a
second pass, the cost this variant shows beside the plain MSP step (`lxmert-s`). `lxmert-s-unchecked` is
`lxmert-s` without the device-side checks of input and label values (`config.check_input_values=False`),
so the two give those checks' cost. `lxmert-s-relations` adds the relation readout to `lxmert-s-align`
(`alignment_relations`), and `lxmert-s-rpt` trains RPT with it too, whose question pass encodes each caption
with one relation word again, its subject hidden. A step is forward, backward and an AdamW update. Each model
runs in a fresh process so that peak memory is its own: peak GPU memory allocated on CUDA, peak resident
memory of the process on the CPU.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from transformers import LxmertConfig, LxmertForPreTraining

from lxmert_s_msp.data.collators import MSPCollator
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.training.stage_data import PretrainingData
from modeling_lxmert_s import LxmertSConfig, LxmertSForPreTraining

# LXMERT-S variants: their tasks beside the region heads (MRFR, MOC), and their config overrides.
VARIANTS = {
    "lxmert-s": (("mlm", "itm"), {}),
    "lxmert-s-flm": (("flm", "itm"), {}),
    "lxmert-s-mlm-flm": (("mlm", "flm", "itm"), {}),
    "lxmert-s-align": (("mlm", "vsc", "wpg", "itm_vsc"), {"pooler_type": "alignment"}),
    "lxmert-s-unchecked": (("mlm", "itm"), {"check_input_values": False}),
    "lxmert-s-relations": (
        ("mlm", "vsc", "wpg", "itm_vsc"),
        {"pooler_type": "alignment", "alignment_relations": True},
    ),
    "lxmert-s-rpt": (
        ("mlm", "vsc", "wpg", "itm_vsc", "rpt"),
        {"pooler_type": "alignment", "alignment_relations": True},
    ),
}
# What transformers' LXMERT trains: MLM, ITM on random negatives and its visual losses.
REFERENCE_TASKS = ("mlm", "itm", "mrfr", "moc")


def world_batch(world: Path, tasks: tuple[str, ...], batch_size: int, text_length: int) -> dict:
    """The first caption of each of `batch_size` world images, collated for `tasks` (seed 0)."""
    data = PretrainingData.open(world)
    captions = data.corpus("captions")
    first = {}
    for row, image in enumerate(captions["image_index"]):
        first.setdefault(image, row)
    rows = captions.select(list(first.values())[:batch_size])
    collator = MSPCollator(
        data.store,
        data.processor(text_length),
        tasks,
        object_vocab=data.object_vocab,
        attribute_vocab=data.attribute_vocab,
    )
    return collator(list(rows), seed=0)


def lxmert_step_inputs(batch: dict) -> dict:
    """transformers' LXMERT's names for the same inputs and labels."""
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "visual_feats": batch["visual_feats"],
        "visual_pos": batch["visual_pos"],
        "labels": batch["mlm_labels"],
        "matched_label": batch["itm_labels"],
        "obj_labels": {
            "obj": (batch["moc_object_labels"], batch["moc_object_confidences"]),
            "attr": (batch["moc_attribute_labels"], batch["moc_attribute_confidences"]),
            "feat": (batch["mrfr_labels"], batch["region_mask"].float()),
        },
    }


def build(name: str, sizes: dict[str, int]) -> tuple[torch.nn.Module, tuple[str, ...]]:
    """The model and the tasks its batch is collated for."""
    if name in VARIANTS:
        tasks, overrides = VARIANTS[name]
        tasks = (*tasks, "mrfr", "moc")
        config = LxmertSConfig(**sizes, **overrides, pretraining_tasks=list(tasks))
        return LxmertSForPreTraining(config), tasks
    if sizes:
        raise SystemExit("the size options apply to the LXMERT-S models only")
    reference = LxmertConfig(l_layers=0, r_layers=0, x_layers=LxmertSConfig().num_layers, task_qa=False)
    return LxmertForPreTraining(reference), REFERENCE_TASKS


def measure(name: str, world: Path, args: argparse.Namespace) -> tuple[float, int, float]:
    """Samples/s, peak bytes and the last loss of `args.steps` timed steps after warm-up."""
    torch.manual_seed(0)
    device = args.device
    sizes = {
        key: value
        for key in ("hidden_size", "num_layers", "intermediate_size", "num_attention_heads", "vocab_size")
        if (value := getattr(args, key)) is not None
    }
    model, tasks = build(name, sizes)
    model.to(device).train()
    batch = world_batch(world, tasks, args.batch_size, args.text_length)
    batch = {key: value.to(device) for key, value in batch.items()}
    inputs = batch if name in VARIANTS else lxmert_step_inputs(batch)
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
    with tempfile.TemporaryDirectory() as folder:
        settings = WorldSettings(images=max(args.batch_size, 200), regions=args.regions, captions_per_image=1)
        world = generate_world(Path(folder) / "world", settings)
        for name in args.models:
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                results[name] = pool.submit(measure, name, world, args).result()
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
