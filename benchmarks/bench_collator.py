"""Stage-collator throughput: pre-tokenised corpus rows -> model inputs + labels, per DataLoader worker.

    python benchmarks/bench_collator.py                  # the stages of STAGES, batch 256, one thread

Builds a synthetic store (36 regions x 2,048 float16 features) in a temporary folder, a tokenised
caption corpus over it, and times `MSPCollator` with one torch thread, as inside a DataLoader worker:
the end-to-end data rate is about this number times the number of workers.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import datasets
import numpy as np
import torch

from lxmert_s_msp.data.collators import MSPCollator, tokenize_corpus
from lxmert_s_msp.data.store import write_store
from lxmert_s_msp.data.tokenizer import wordpiece_tokenizer_from_vocabulary
from lxmert_s_msp.training.sampling import IndexedRows
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor

ALIGNMENT = ["mlm", "mrfr", "moc", "itm_vsc", "tits", "vsc", "wpg"]
# (tasks, MSPCollator options) of each timed stage: the paper's, and the default curriculum's sentence stage
# without and with the binding negatives of both sides
STAGES = {
    "token": (["mlm", "mrfr", "moc", "ifrs"], {}),
    "sentence": (["mlm", "mrfr", "moc", "itm", "tits"], {}),
    "sentence, alignment": (ALIGNMENT, {}),
    "sentence, alignment, text and region negatives": (
        ALIGNMENT,
        {"binding_negatives": True, "region_negatives": True},
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()

    generator = np.random.default_rng(0)
    images, regions, dim = args.images, 36, 2048
    words, attributes = [f"w{i}" for i in range(50)], [f"c{i}" for i in range(10)]
    with tempfile.TemporaryDirectory() as folder:
        store = write_store(
            f"{folder}/store",
            [str(i) for i in range(images)],
            features=generator.random((images, regions, dim), dtype=np.float32).astype(np.float16),
            boxes=np.tile(np.array([0.0, 0.0, 1.0, 1.0], np.float32), (images, regions, 1)),
            object_ids=generator.integers(0, len(words), (images, regions)),
            object_confidences=np.ones((images, regions)),
            attribute_ids=generator.integers(0, len(attributes), (images, regions)),
            attribute_confidences=np.ones((images, regions)),
            num_boxes=np.full(images, regions),
            image_sizes=np.full((images, 2), 100),
        )
        processor = LxmertSProcessor(wordpiece_tokenizer_from_vocabulary([*words, *attributes]))
        corpus = datasets.Dataset.from_dict(
            {
                "image_index": list(range(images)),
                "image_id": [str(i) for i in range(images)],
                "text": [  # "c3 w17 w4 c0 w9 ...": attribute and object words
                    " ".join(generator.choice([*words, *attributes], 8)) for _ in range(images)
                ],
            }
        )
        corpus = tokenize_corpus(corpus, processor)
        rows = IndexedRows(corpus).__getitems__([(0, i) for i in range(args.batch_size)])  # as in training
        torch.set_num_threads(1)
        for stage, (tasks, options) in STAGES.items():
            collate = MSPCollator(store, processor, tasks, words, attributes, **options)
            collate(rows)
            start = time.perf_counter()
            for _ in range(args.batches):
                collate(rows)
            rate = args.batch_size * args.batches / (time.perf_counter() - start)
            print(
                f"{stage} stage {tasks} {options}: {rate:8.0f} samples/s (1 thread, batch {args.batch_size})"
            )


if __name__ == "__main__":
    main()
