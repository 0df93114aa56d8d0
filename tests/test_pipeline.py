"""Store -> corpus -> stage collator -> LXMERT-S: the data side's labels are exactly what the heads read."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lxmert_s_msp.data.collators import MSPCollator, tokenize_corpus
from lxmert_s_msp.data.corpus_builders import caption_corpus, token_corpus
from lxmert_s_msp.data.readers import Caption
from lxmert_s_msp.data.store import write_store
from lxmert_s_msp.data.tokenizer import wordpiece_tokenizer_from_vocabulary
from modeling_lxmert_s import LxmertSConfig, LxmertSForPreTraining
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor

OBJECTS = ["man", "dog", "car", "tree", "shirt", "sky"]
WORDS = [*OBJECTS, "a", "red", "blue", "green", "with", "the", "under", "##s"]
STAGES = {
    "token": ["mlm", "mrfr", "moc", "ifrs"],
    "phrase": ["mlm", "mrfr", "moc", "titp"],
    "sentence": ["mlm", "mrfr", "moc", "itm", "tits"],
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    generator = np.random.default_rng(0)
    images, regions, dim = 12, 9, 16
    num_boxes = generator.integers(6, regions + 1, images)
    valid = np.arange(regions)[None, :] < num_boxes[:, None]
    corners = np.sort(generator.random((images, regions, 2, 2)), axis=2)
    store = write_store(
        tmp_path_factory.mktemp("store") / "store",
        [f"img{i}" for i in range(images)],
        features=generator.random((images, regions, dim)) * valid[..., None],
        boxes=np.swapaxes(corners, 2, 3).reshape(images, regions, 4) * valid[..., None],
        object_ids=generator.integers(0, len(OBJECTS), (images, regions)) * valid,
        object_confidences=generator.random((images, regions)) * valid,
        attribute_ids=generator.integers(0, 3, (images, regions)) * valid,
        attribute_confidences=generator.random((images, regions)) * valid,
        num_boxes=num_boxes,
        image_sizes=np.full((images, 2), 100),
    )
    processor = LxmertSProcessor(
        wordpiece_tokenizer_from_vocabulary(WORDS), num_regions=regions, max_length=12
    )
    captions = [
        Caption(f"img{i}", f"a {OBJECTS[i % 6]} with the red {OBJECTS[(i + 1) % 6]}s", "mscoco")
        for i in range(images)
    ]
    corpora = {
        "token": token_corpus(store, OBJECTS).dataset,
        "phrase": caption_corpus(captions, store).dataset,
        "sentence": caption_corpus(captions, store).dataset,
    }
    config = LxmertSConfig(
        hidden_size=16,
        num_attention_heads=2,
        intermediate_size=32,
        num_layers=2,
        vocab_size=len(processor.tokenizer),
        max_position_embeddings=16,
        visual_feat_dim=dim,
        num_object_labels=len(OBJECTS),
        num_attr_labels=3,
        pretraining_tasks=sorted({task for tasks in STAGES.values() for task in tasks}),
    )
    return store, processor, corpora, config


@pytest.mark.parametrize("stage", list(STAGES))
def test_each_stage_batch_trains_the_model(world, stage):
    store, processor, corpora, config = world
    tasks = STAGES[stage]
    corpus = tokenize_corpus(corpora[stage], processor)
    # every triplet shuffled: with 5% a batch this small may shuffle none and IFRS would stay silent
    collate = MSPCollator(
        store, processor, tasks, object_vocab=OBJECTS, seed=3, triplet_shuffle_probability=1.0
    )
    batch = collate([corpus[i] for i in range(len(corpus))], seed=0)
    model = LxmertSForPreTraining(config).train()
    output = model(**batch)
    assert set(output.losses) == set(tasks)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    assert model.lxmert.encoder.visn_fc.visn_fc.weight.grad.abs().sum() > 0
    if "titp" in tasks or "tits" in tasks:
        assert batch[f"{tasks[-1]}_labels"].sum() > 0  # the captions name detected objects
