"""A re-run never reuses another setting's results: stage folders record what their weights depend on, what
every stage needs is checked before the first trains, corpora must point at the store they are read with,
and a run whose logging is sparser than a stage still ends with its losses, its plot and its model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from tiny_curriculum import ONE_EPOCH_PHRASE as PHRASE
from tiny_curriculum import ONE_EPOCH_TOKEN as TOKEN
from tiny_curriculum import TINY_WORLD, write_tiny_curriculum
from transformers import AutoTokenizer

from lxmert_s_msp.data.corpus_builders import flickr30k_dataset, save_corpus
from lxmert_s_msp.data.readers import read_flickr30k_karpathy
from lxmert_s_msp.data.store import ARRAYS, FeatureStore, replace_folder, write_store
from lxmert_s_msp.data.synthetic import WorldSettings, generate_world
from lxmert_s_msp.data.tokenizer import load_tokenizer
from lxmert_s_msp.evaluation.zero_shot import ZeroShotSettings
from lxmert_s_msp.training.curriculum import Source, StageConfig, TrainingConfig, load_curriculum
from lxmert_s_msp.training.pretraining import run_curriculum
from lxmert_s_msp.training.stage_data import PretrainingData, stage_data
from lxmert_s_msp.training.stage_record import RECORD, StageMismatchError, digest_of


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("data") / "world", WorldSettings(images=40, feature_dim=32))


def _curriculum(folder, world, stages, **training):
    folder.mkdir(exist_ok=True)
    return load_curriculum(write_tiny_curriculum(folder, stages, data={"dir": str(world)}, **training))


def _stamps(out):
    return {
        path: path.stat().st_mtime_ns for path in out.rglob("model.safetensors") if "hub" not in path.parts
    }


def test_changed_settings_are_refused_before_training_and_retrained_when_asked(tmp_path, world, capsys):
    out = tmp_path / "out"
    first = run_curriculum(_curriculum(tmp_path / "a", world, [TOKEN, PHRASE]), out)
    stamps = _stamps(out)
    assert json.loads((out / "1-token" / RECORD).read_text())["stage"]["learning_rate"] == 1e-3

    # the same command again: nothing trains, and the console says why
    capsys.readouterr()
    run_curriculum(_curriculum(tmp_path / "a", world, [TOKEN, PHRASE]), out)
    assert "Stage 1/2 'token': finished by an earlier run with the same settings" in capsys.readouterr().out
    assert _stamps(out) == stamps

    # only the last stage changed: refused before the first stage is even looked at, naming the change
    changed = _curriculum(tmp_path / "b", world, [TOKEN, {**PHRASE, "learning_rate": 1e-5}])
    with pytest.raises(StageMismatchError, match=r"stage 'phrase'.*stage\.learning_rate: 0\.001 -> 1e-05"):
        run_curriculum(changed, out)
    assert _stamps(out) == stamps

    # a changed first stage makes every later one another result too
    earlier = _curriculum(tmp_path / "c", world, [{**TOKEN, "epochs": 2}, PHRASE])
    with pytest.raises(StageMismatchError, match=r"stage 'token'.*stage\.epochs: 1 -> 2"):
        run_curriculum(earlier, out)
    retrained = run_curriculum(earlier, out, overwrite_output_dir=True)
    assert [stage.global_step for stage in retrained.stages] == [
        2 * first.stages[0].global_step,
        first.stages[1].global_step,
    ]
    finals = [out / stage / "final" / "model.safetensors" for stage in ("1-token", "2-phrase")]
    assert all(path.stat().st_mtime_ns != stamps[path] for path in finals)
    token_record = json.loads((out / "1-token" / RECORD).read_text())
    assert token_record["stage"]["epochs"] == 2
    assert json.loads((out / "2-phrase" / RECORD).read_text())["previous_stage"] == digest_of(token_record)


def test_training_fields_count_as_other_settings_only_when_they_change_the_weights(tmp_path, world):
    out = tmp_path / "out"
    run_curriculum(_curriculum(tmp_path / "a", world, [TOKEN]), out)
    stamps = _stamps(out)
    # logging, checkpointing, loaders, and a field given at transformers' default: the same result
    same = dict(logging_steps=3, save_steps=5, dataloader_num_workers=1, report_to=["none"], weight_decay=0.0)
    run_curriculum(_curriculum(tmp_path / "b", world, [TOKEN], **same), out)
    assert _stamps(out) == stamps
    with pytest.raises(StageMismatchError, match=r"training\.adam_beta2: None -> 0\.98"):
        run_curriculum(_curriculum(tmp_path / "c", world, [TOKEN], adam_beta2=0.98), out)


def test_a_tokenizer_with_other_settings_and_the_same_vocabulary_is_another_setting(tmp_path, world):
    """The record fingerprints every file of the tokenizer, not only its vocabulary: with lower-casing off,
    the same vocabulary gives other token ids to every capitalised word."""
    data, out = tmp_path / "world", tmp_path / "out"
    shutil.copytree(world, data)
    run_curriculum(_curriculum(tmp_path / "a", data, [TOKEN]), out)
    stamps = _stamps(out)
    AutoTokenizer.from_pretrained(data / "tokenizer", do_lower_case=False).save_pretrained(data / "tokenizer")
    cased, uncased = load_tokenizer(data / "tokenizer"), load_tokenizer(world / "tokenizer")
    assert cased.get_vocab() == uncased.get_vocab()
    assert cased("Dog")["input_ids"] != uncased("Dog")["input_ids"]
    with pytest.raises(StageMismatchError, match=r"stage 'token'.*data\.tokenizer"):
        run_curriculum(_curriculum(tmp_path / "a", data, [TOKEN]), out)
    assert _stamps(out) == stamps


def test_a_retrieval_split_that_cannot_be_scored_is_refused_before_the_first_stage(tmp_path, world):
    data, out = tmp_path / "world", tmp_path / "out"
    shutil.copytree(world, data)
    images = read_flickr30k_karpathy(data / "dataset_flickr30k.json")
    first_test = next(image for image in images if image.split == "test")
    kept = [image for image in images if image.split != "test" or image is first_test]
    save_corpus(
        flickr30k_dataset(kept, FeatureStore(data / "store")), data / "corpora" / "flickr30k", overwrite=True
    )
    sentence = {**TOKEN, "name": "sentence", "corpus": "captions", "tasks": ["mlm", "itm"], "max_length": 20}
    with pytest.raises(ValueError, match=r"corpora/flickr30k: split 'test' has 1 image: .* at least 2"):
        run_curriculum(_curriculum(tmp_path, data, [TOKEN, sentence]), out, ZeroShotSettings())
    assert sorted(path.name for path in out.iterdir()) == [".lock"]


def test_overwrite_output_dir_replaces_a_world_of_other_settings(tmp_path):
    out = tmp_path / "out"
    run_curriculum(
        load_curriculum(write_tiny_curriculum(tmp_path, [TOKEN], data={"synthetic": TINY_WORLD})), out
    )
    other = {**TINY_WORLD, "feature_dim": 16}
    changed = load_curriculum(write_tiny_curriculum(tmp_path, [TOKEN], data={"synthetic": other}))
    with pytest.raises(
        FileExistsError,
        match=r"out/world holds a world made with other settings or by an older version of the generator "
        r"\(feature_dim: 32 -> 16\).*--overwrite_outp",
    ):
        run_curriculum(changed, out)
    assert json.loads((out / "world" / "world.json").read_text())["feature_dim"] == 32
    run_curriculum(changed, out, overwrite_output_dir=True)
    assert json.loads((out / "world" / "world.json").read_text())["feature_dim"] == 16
    assert FeatureStore(out / "world" / "store").feature_dim == 16


def test_a_folder_of_an_earlier_version_without_a_record_is_refused(tmp_path, world):
    out = tmp_path / "out"
    (out / "1-token" / "final").mkdir(parents=True)
    with pytest.raises(StageMismatchError, match=f"no {RECORD} in it"):
        run_curriculum(_curriculum(tmp_path, world, [TOKEN]), out)


def test_what_a_later_stage_needs_is_checked_before_the_first_trains(tmp_path, world):
    missing = {**PHRASE, "corpus": "no_such_corpus"}
    with pytest.raises(FileNotFoundError, match="no corpus 'no_such_corpus'"):
        run_curriculum(_curriculum(tmp_path, world, [TOKEN, missing]), tmp_path / "out")
    uneven = {**PHRASE, "batch_size": 7, "gradient_accumulation_steps": 2}
    with pytest.raises(ValueError, match="batch_size: 7 is not divisible"):
        run_curriculum(_curriculum(tmp_path, world, [TOKEN, uneven]), tmp_path / "out")
    assert not (tmp_path / "out" / "1-token").exists()


def test_a_corpus_built_against_another_store_is_refused(tmp_path, world):
    data = tmp_path / "world"
    shutil.copytree(world, data)
    store = FeatureStore(data / "store")
    order = np.arange(len(store))[::-1]  # the same images, rebuilt in another order
    arrays = {name: np.asarray(getattr(store, name))[order] for name in ARRAYS}
    shutil.rmtree(data / "store")
    write_store(data / "store", [store.image_ids[row] for row in order], **arrays)
    with pytest.raises(
        ValueError, match=r"built against another feature store .*python -m lxmert_s_msp.data.corpora"
    ):
        PretrainingData.open(data).corpus("captions")


def test_a_stage_shorter_than_logging_steps_still_logs_plots_and_writes_its_model(tmp_path, world):
    result = run_curriculum(_curriculum(tmp_path, world, [TOKEN], logging_steps=1000), tmp_path / "out")
    (stage,) = result.stages
    assert stage.global_step < 1000
    assert {"loss/mlm", "loss/mrfr", "loss/moc"} <= set(stage.final_losses)
    assert result.plot is not None and result.plot.is_file()
    assert (result.hub_folder / "model.safetensors").is_file()


def test_each_stage_says_where_its_itm_negatives_come_from(world):
    data = PretrainingData.open(world)
    said = {}
    for task in ("itm", "itm_hs"):
        stage = StageConfig(
            "s", [Source("captions", ["mlm", task])], epochs=1, batch_size=8, learning_rate=1e-3
        )
        said[task] = stage_data(data, stage, TrainingConfig(), seed=0).collator.describe_negatives()
    assert said["itm"] == "random among the corpus's 32 images (itm)"
    assert said["itm_hs"].startswith(f"hard: each image's most similar images from {world / 'store'}")
    token = StageConfig(
        "t", [Source("tokens", ["mlm"])], epochs=1, batch_size=8, learning_rate=1e-3, max_length=38
    )
    assert stage_data(data, token, TrainingConfig(), seed=0).collator.describe_negatives() is None


def test_the_old_folder_of_a_killed_replacement_is_removed_by_the_next(tmp_path):
    out, stale = tmp_path / "hub", tmp_path / ".hub.old-12345"
    out.mkdir()
    stale.mkdir()
    (stale / "model.safetensors").write_text("left by a killed run")
    finished = tmp_path / "hub.partial"
    finished.mkdir()
    (finished / "README.md").write_text("new")
    replace_folder(finished, out)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["hub"]
    assert (out / "README.md").read_text() == "new"
