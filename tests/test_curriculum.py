"""Curriculum files: the shipped ones load as documented; bad ones fail naming the file and the field."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from lxmert_s_msp.training.curriculum import MLM_RATES, CurriculumError, load_curriculum

CONFIGS = Path(__file__).parent.parent / "recipes" / "configs"
TOKEN, PHRASE, SENTENCE = (
    ["mlm", "mrfr", "moc", "ifrs"],
    ["mlm", "mrfr", "moc", "titp"],
    ["mlm", "mrfr", "moc", "itm_hs", "tits"],
)


def test_the_paper_schedule():
    curriculum = load_curriculum(CONFIGS / "msp_paper.yaml")
    schedule = [(s.name, s.tasks, s.epochs, s.batch_size, s.learning_rate) for s in curriculum.stages]
    assert schedule == [
        ("token", TOKEN, 10, 64, 1e-5),
        ("phrase", PHRASE, 20, 128, 1e-5),
        ("sentence", SENTENCE, 20, 128, 1e-5),
    ]
    assert curriculum.training.optimizer_state == "restart"
    assert curriculum.training.arguments["weight_decay"] == 0.0
    # measured text lengths: all 36 labels fit the token stage (docs/benchmarks.md, "Text lengths")
    assert [stage.max_length for stage in curriculum.stages] == [72, 72, 20]
    assert [stage.mlm_class_word_probability for stage in curriculum.stages] == [None, 0.3, None]
    # IFRS's squared L2 summed over 2,048 dimensions, brought to a mean over them (docs, "Loss scales")
    assert curriculum.model["loss_weights"] == {"ifrs": 1 / 2048}


@pytest.mark.parametrize(
    ("name", "order"),
    [
        ("s", ["sentence"]),
        ("t_s", ["token", "sentence"]),
        ("p_s", ["phrase", "sentence"]),
        ("t_p_s", ["token", "phrase", "sentence"]),
        ("s_p_t", ["sentence", "phrase", "token"]),
        ("p_t_s", ["phrase", "token", "sentence"]),
    ],
)
def test_table4_orderings_reuse_the_paper_stages(name, order):
    curriculum = load_curriculum(CONFIGS / "table4" / f"{name}.yaml")
    paper = {stage.name: stage for stage in load_curriculum(CONFIGS / "msp_paper.yaml").stages}
    assert curriculum.stages == [paper[stage] for stage in order]


def test_table4_mixed_is_one_stage_over_every_corpus():
    (stage,) = load_curriculum(CONFIGS / "table4" / "tps_mixed.yaml").stages
    assert [(source.corpus, source.tasks) for source in stage.sources] == [
        ("tokens", TOKEN),
        ("phrases", PHRASE),
        ("captions", SENTENCE),
    ]
    assert stage.tasks == ["mlm", "mrfr", "moc", "ifrs", "titp", "itm_hs", "tits"]


@pytest.mark.parametrize(
    ("name", "order", "tasks"),
    [  # the task rows of the paper's Table 4 (§4.6): a stage order with tasks removed or replaced
        ("s_no_itm_hs", ["sentence"], {"sentence": ["mlm", "mrfr", "moc", "tits"]}),
        ("s_no_itm_hs_tits", ["sentence"], {"sentence": ["mlm", "mrfr", "moc"]}),
        ("s_itm", ["sentence"], {"sentence": ["mlm", "mrfr", "moc", "itm"]}),
        ("t_s_no_ifrs", ["token", "sentence"], {"token": ["mlm", "mrfr", "moc"]}),
        ("p_s_no_titp", ["phrase", "sentence"], {"phrase": ["mlm", "mrfr", "moc"]}),
        ("t_p_s_no_titp", ["token", "phrase", "sentence"], {"phrase": ["mlm", "mrfr", "moc"]}),
    ],
)
def test_table4_task_rows_are_the_papers(name, order, tasks):
    curriculum = load_curriculum(CONFIGS / "table4" / f"{name}.yaml")
    paper = {stage.name: stage for stage in load_curriculum(CONFIGS / "msp_paper.yaml").stages}
    assert [stage.name for stage in curriculum.stages] == order
    for changed in curriculum.stages:
        original = paper[changed.name]
        assert changed.tasks == tasks.get(changed.name, original.tasks)
        assert dataclasses.replace(changed, sources=original.sources) == original  # schedule untouched


def test_every_table4_file_is_a_row_of_the_table():
    rows = {"s", "t_s", "p_s", "t_p_s", "s_p_t", "p_t_s", "tps_mixed"}
    rows |= {"s_no_itm_hs", "s_no_itm_hs_tits", "s_itm", "t_s_no_ifrs", "p_s_no_titp", "t_p_s_no_titp"}
    assert {path.stem for path in (CONFIGS / "table4").glob("*.yaml")} == rows
    for path in (CONFIGS / "table4").glob("*.yaml"):
        assert path.read_text(encoding="utf-8").startswith("# Table 4, "), path


def test_default_config_is_the_synthetic_curriculum_with_the_alignment_tasks():
    curriculum = load_curriculum(CONFIGS / "synthetic.yaml")
    assert curriculum.data.synthetic is not None and curriculum.data.dir is None
    alignment = ["vsc", "wpg", "itm_vsc"]
    assert [sorted(stage.tasks) for stage in curriculum.stages] == [
        sorted(TOKEN),
        sorted(PHRASE + alignment),
        sorted([task for task in SENTENCE if task != "itm_hs"] + alignment),
    ]
    assert curriculum.model["pooler_type"] == "alignment"
    paper_tasks = load_curriculum(CONFIGS / "synthetic_paper_tasks.yaml")
    assert [stage.tasks for stage in paper_tasks.stages] == [TOKEN, PHRASE, SENTENCE]


@pytest.mark.parametrize(
    ("single", "curriculum"),
    [("synthetic_s", "synthetic"), ("synthetic_paper_tasks_s", "synthetic_paper_tasks")],
)
def test_the_sentence_only_configs_train_as_many_steps_as_their_curriculum(single, curriculum):
    # rows of the default world (seed 0): 800 token texts, 1,542 packed phrase texts, 4,000 captions
    rows = {"tokens": 800, "phrases": 1542, "captions": 4000}

    def steps(config: str) -> int:
        stages = load_curriculum(CONFIGS / f"{config}.yaml").stages
        return sum(
            math.ceil(rows[stage.sources[0].corpus] / stage.batch_size) * stage.epochs for stage in stages
        )

    sentence = load_curriculum(CONFIGS / f"{single}.yaml").stages
    assert [stage.name for stage in sentence] == ["sentence"]
    assert sentence[0].tasks == load_curriculum(CONFIGS / f"{curriculum}.yaml").stages[-1].tasks
    assert abs(steps(single) - steps(curriculum)) <= math.ceil(rows["captions"] / 64)


# each grounding config's changes to the stages that have ITM_VSC (the phrase and sentence stages)
BINDING, REGIONS = {"binding_negatives": True}, {"region_negatives": True}
RELATIONS = {"mlm_relation_word_probability": 0.5}
SUBJECTS = {"mlm_relation_subject_probability": 0.5}


READOUT = {"visual_geometry_bias": True, "alignment_counts": True}
PLACES = {"loss_weights": {"ifrs": 0.001, "wpg": 10.0, "wbr": 10.0}}


@pytest.mark.parametrize(
    ("name", "base", "model_changes", "added_task", "stage_changes"),
    [
        ("readout", "synthetic", READOUT, None, {}),
        ("readout_tag", "synthetic", READOUT, "tag", {}),
        ("binding", "synthetic", {}, None, BINDING),
        ("regions", "synthetic", {}, None, REGIONS),
        ("relations", "synthetic", {}, None, RELATIONS),
        ("subjects", "synthetic", {}, None, SUBJECTS),
        ("boxes", "synthetic", {"text_reads_boxes": True}, None, {}),
        ("all", "synthetic", READOUT, "tag", BINDING),
        ("tag", "synthetic", {}, "tag", {}),
        ("tag_s", "synthetic_s", {}, "tag", {}),
        ("places", "synthetic", PLACES, "wbr", {}),
        ("relation_readout", "synthetic", {"alignment_relations": True}, None, {}),
        ("relation_readout_binding", "synthetic", {"alignment_relations": True}, None, BINDING),
        ("relation_pointing", "synthetic", {"alignment_relations": True}, "rpt", {}),
    ],
)
def test_each_grounding_config_is_its_base_with_only_its_changes(
    name, base, model_changes, added_task, stage_changes
):
    # docs/results.md compares each of these with its base: nothing else may differ
    default = load_curriculum(CONFIGS / f"{base}.yaml")
    variant = load_curriculum(CONFIGS / "grounding" / f"{name}.yaml")
    assert variant.model == {**default.model, **model_changes}
    assert (variant.data, variant.training) == (default.data, default.training)
    assert len(variant.stages) == len(default.stages)
    for ours, theirs in zip(variant.stages, default.stages, strict=True):
        # RPT needs relation words, which the token stage's labels never have: phrase and sentence stages only
        adds = added_task is not None and (added_task != "rpt" or "itm_vsc" in theirs.tasks)
        expected = dataclasses.replace(
            theirs,
            sources=[
                dataclasses.replace(source, tasks=[*source.tasks, added_task] if adds else source.tasks)
                for source in theirs.sources
            ],
            **(stage_changes if "itm_vsc" in theirs.tasks else {}),
        )
        assert ours == expected


def test_data_dir_replaces_the_configured_data():
    curriculum = load_curriculum(CONFIGS / "synthetic.yaml", data_dir="/data/lxmert")
    assert (curriculum.data.dir, curriculum.data.synthetic) == ("/data/lxmert", None)


def _write(tmp_path: Path, text: str, name: str = "curriculum.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


STAGE = "{name: s, corpus: captions, tasks: [mlm], epochs: 1, batch_size: 8, learning_rate: 1.0e-4}"


# A bad `model:` or `training:` section of an otherwise good curriculum, and the error naming its field.
BAD_SECTIONS = [
    ("model: {hiden_size: 32}", r"model: unknown key 'hiden_size'; did you mean 'hidden_size'\?"),
    ("model: {vocab_size: 100}", r"model\.vocab_size: set by the run from the tokenizer's size; remove it"),
    (
        "model: {pretraining_tasks: [mlm]}",
        r"model\.pretraining_tasks: set by the run from each stage's tasks",
    ),
    ("model: {visual_feat_dim: 16}", r"model\.visual_feat_dim: set by the run from the feature store"),
    ("model: {hidden_size: big}", r"model\.hidden_size: expected int, got 'big'"),
    ("model: {hidden_dropout_prob: '0.1'}", r"model\.hidden_dropout_prob: expected float \| int, got '0\.1'"),
    ("model: {pooler_type: mean}", r"model\.pooler_type: expected 'product' or 'language' or 'alignment'"),
    ("model: {hidden_size: 30, num_attention_heads: 4}", r"model: hidden_size \(30\) must be a multiple of"),
    ("model: [hidden_size]", r"model: expected a mapping of LxmertSConfig fields"),
    ("training: {save_steps: 0}", r"training\.save_steps: must be positive, got 0"),
    ("training: {save_steps: -5}", r"training\.save_steps: must be positive, got -5"),
    ("training: {logging_steps: 0}", r"training\.logging_steps: must be positive"),
    ("training: {dataloader_num_workers: -1}", r"training\.dataloader_num_workers: must not be negative"),
    ("training: {mlm_probability: 1.5}", r"training\.mlm_probability: must be in \[0, 1\], got 1\.5"),
    ("training: {region_mask_probability: -0.1}", r"training\.region_mask_probability: must be in \[0, 1\]"),
    ("training: {triplet_shuffle_probability: 2}", r"training\.triplet_shuffle_probability: must be in"),
    ("training: {mismatch_probability: -1}", r"training\.mismatch_probability: must be in \[0, 1\]"),
    (
        "training: {gradient_acumulation_steps: 2}",
        r"training\.gradient_acumulation_steps: neither .*did you mean 'gradient_accumulation_steps'",
    ),
    ("training: {adam_beta2: high}", r"training\.adam_beta2: expected float, got 'high'"),
    ("training: {output_dir: o}", r"training\.output_dir: set by the run: each stage trains in"),
    ("training: {push_to_hub: true}", r"training\.push_to_hub: set by the run: a choice of the command line"),
    ("training: {eval_strategy: steps}", r"training\.eval_strategy: set by the run: pre-training has no"),
    ("training: {learning_rate: 0}", r"training\.learning_rate: must be positive, got 0"),
    ("training: {warmup_steps: 100}", r"training\.warmup_steps: a stage's warm-up is a fraction"),
    ("training: {save_total_limit: 0}", r"training\.save_total_limit: must be positive, or null"),
    ("training: {weight_decay: .nan}", r"training\.weight_decay: must be a finite number, got nan"),
    ("training: {learning_rate: .inf}", r"training\.learning_rate: must be a finite number, got inf"),
    ("model: {hidden_dropout_prob: .nan}", r"model\.hidden_dropout_prob: must be a finite number, got nan"),
]
_STAGE_KEYS = "corpus: c, tasks: [mlm], epochs: 1, batch_size: 8, learning_rate: 1"
# A stage name names its folder, <output_dir>/<i>-<name>: one safe path component, nothing else.
BAD_STAGE_NAMES = ["../../x", "a/b", "''", ".hidden", "'a b'", "'-a'", "'x\\y'", "'" + "a" * 101 + "'"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"data: {{dir: d}}\nstages: [{STAGE}]\nmodle: {{}}", r"unknown keys \['modle'\]"),
        (
            f"data: {{dir: d}}\ntraining: {{sed: 1}}\nstages: [{STAGE}]",
            r"training\.sed: neither a TrainingArguments field nor one of MSP's settings .*; did you mean "
            "'seed'",
        ),
        (
            f"data: {{dir: d}}\ntraining: {{optimizer_state: keep}}\nstages: [{STAGE}]",
            r"training\.optimizer_state",
        ),
        (f"data: {{dir: d, synthetic: {{}}}}\nstages: [{STAGE}]", "exactly one of `dir` and `synthetic`"),
        (f"data: {{synthetic: {{imagez: 5}}}}\nstages: [{STAGE}]", r"data\.synthetic: unknown keys"),
        (
            "data: {dir: d}\nstages: [{name: s, corpus: c, tasks: [mlm, foo], epochs: 1, batch_size: 8, "
            "learning_rate: 1}]",
            r"stages\[0\]\.sources\[0\]\.tasks",
        ),
        (
            "data: {dir: d}\nstages: [{name: s, corpus: c, tasks: [mlm], epochs: 1, learning_rate: 1}]",
            r"stages\[0\]: missing \['batch_size'\]",
        ),
        (
            "data: {dir: d}\nstages: [{name: s, corpus: c, tasks: [mlm], epochs: 1, batch_size: 8.5, "
            "learning_rate: 1}]",
            r"stages\[0\]\.batch_size: expected int",
        ),
        (
            "data: {dir: d}\nstages: [{name: s, corpus: c, tasks: [mlm], epochs: 0, batch_size: 8, "
            "learning_rate: 1}]",
            r"stages\[0\]\.epochs: must be positive",
        ),
        (f"data: {{dir: d}}\nstages: [{STAGE}, {STAGE}]", "names must be unique"),
        (
            "data: {dir: d}\nstages: [{name: s, corpus: c, tasks: [mlm, itm, itm_hs], epochs: 1, "
            "batch_size: 8, learning_rate: 1}]",
            r"stages\[0\]: pretraining_tasks: \['itm', 'itm_hs'\] train the same head \(heads.itm\)",
        ),
        (
            "data: {dir: d}\nstages: [{name: s, corpus: c, tasks: [mlm], epochs: 1, batch_size: 8, "
            "learning_rate: 1, max_length: 600}]",
            r"stages\[0\]\.max_length: must be between 3 .* 512 positions, got 600",
        ),
        *[
            (
                "data: {dir: d}\nstages: [{name: s, corpus: c, tasks: [mlm, itm], epochs: 1, batch_size: 8, "
                f"learning_rate: 1, {name}: true}}]",
                rf"stages\[0\]\.{name}: set, but the stage has no 'itm_vsc' task",
            )
            for name in ("binding_negatives", "region_negatives")
        ],
        (
            "data: {dir: d}\nstages: [{name: s, corpus: c, tasks: [mlm, itm], epochs: 1, batch_size: 8, "
            "learning_rate: 1, relation_side_confidence: 0.5}]",
            r"stages\[0\]\.relation_side_confidence: set, but the stage has no 'rpt' task",
        ),
        *[
            (
                "data: {dir: d}\nstages: [{name: s, corpus: c, tasks: [itm], epochs: 1, batch_size: 8, "
                f"learning_rate: 1, {name}: 0.5}}]",
                rf"stages\[0\]\.{name}: set, but the stage has no 'mlm' task",
            )
            for name in MLM_RATES
        ],
        *[
            (
                "data: {dir: d}\nstages: [{name: s, corpus: c, tasks: [mlm], epochs: 1, batch_size: 8, "
                f"learning_rate: 1, {name}: 1.5}}]",
                rf"stages\[0\]\.{name}: must be in \[0, 1\], got 1.5",
            )
            for name in MLM_RATES
        ],
        (
            "data: {dir: d}\nstages: [{name: s, corpus: c, tasks: [mlm, rpt], epochs: 1, batch_size: 8, "
            "learning_rate: 1, relation_side_confidence: 1.5}]",
            r"stages\[0\]\.relation_side_confidence: must be in \[0, 1\], got 1.5",
        ),
        (f"data: {{dir: d}}\nstages: [{STAGE}]\nremove_tasks: [ifrs]", r"no stage has the tasks \['ifrs'\]"),
        (f"data: {{dir: d}}\nstages: [{STAGE}]\nremove_tasks: [mlm]", r"after remove_tasks.*tasks from"),
        (
            "data: {dir: d}\nstages: [{name: s, corpus: c, tasks: [mlm, itm], epochs: 1, batch_size: 8, "
            "learning_rate: 1}]\nreplace_tasks: {mlm: itm_hs}",
            r"stages\[0\] \(s\) after remove_tasks / replace_tasks: pretraining_tasks: \['itm_hs', 'itm'\] "
            "train the same head",
        ),
        (f"data: {{dir: d}}\nstages: [{STAGE}]\norder: [t]", r"order: no stage named \['t'\]"),
        *[
            (
                f"data: {{dir: d}}\nstages: [{{name: {name}, {_STAGE_KEYS}}}]",
                r"stages\[0\]\.name: .* is not a single folder name: use at most 100 letters, digits",
            )
            for name in BAD_STAGE_NAMES
        ],
        (
            "data: {dir: d}\nstages: [{name: s, corpus: c, tasks: [mlm], epochs: .inf, batch_size: 8, "
            "learning_rate: 1}]",
            r"stages\[0\]\.epochs: must be a finite number, got inf",
        ),
        (
            "data: {dir: d}\nstages: [{name: s, corpus: c, tasks: [mlm], epochs: 1, batch_size: 8, "
            "learning_rate: .nan}]",
            r"stages\[0\]\.learning_rate: must be a finite number, got nan",
        ),
        (
            f"data: {{dir: d}}\nstages: [{STAGE}]\ntraining: {{seed: 1}}\ntraining: {{seed: 2}}",
            r"key 'training' is given twice, on lines 3 and 4: remove one",
        ),
        (
            "data: {dir: d}\nstages:\n  - name: s\n    corpus: c\n    tasks: [mlm]\n    epochs: 1\n"
            "    batch_size: 8\n    learning_rate: 1\n    epochs: 3\n",
            r"key 'epochs' is given twice, on lines 6 and 9: remove one",
        ),
        *[(f"data: {{dir: d}}\nstages: [{STAGE}]\n{section}", message) for section, message in BAD_SECTIONS],
        ("data: {dir: d}\nstages: []", "at least one stage"),
        ("data: [dir", "not valid YAML"),
    ],
)
def test_bad_curricula_name_the_file_and_the_field(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(CurriculumError, match=message) as error:
        load_curriculum(path)
    assert str(path) in str(error.value)


def test_a_stage_name_may_use_letters_digits_dots_underscores_and_hyphens(tmp_path):
    path = _write(tmp_path, f"data: {{dir: d}}\nstages: [{{name: Sentence_2.b-1, {_STAGE_KEYS}}}]")
    assert [stage.name for stage in load_curriculum(path).stages] == ["Sentence_2.b-1"]


def test_numbers_with_an_exponent_and_no_dot_are_numbers(tmp_path):
    """YAML 1.1 (PyYAML's) reads `1e-3` as a string: it wants a dot (`1.0e-3`). A curriculum reads it as YAML
    1.2 and every other language do, as the number."""
    text = (
        "data: {dir: d}\ntraining: {weight_decay: 1e-2, adam_epsilon: 1E-8}\n"
        "stages: [{name: s, corpus: c, tasks: [mlm], epochs: 1, batch_size: 8, learning_rate: 1e-3}]"
    )
    curriculum = load_curriculum(_write(tmp_path, text))
    assert curriculum.stages[0].learning_rate == 1e-3
    assert curriculum.training.arguments["weight_decay"] == 1e-2
    assert curriculum.training.arguments["adam_epsilon"] == 1e-8
    # a merge key (`<<`) is not a duplicate: the mapping's own keys replace the merged ones, as YAML says
    merged = (
        "data: {dir: d}\nstages:\n  - &s {name: s, corpus: c, tasks: [mlm], epochs: 1, batch_size: 8, "
        "learning_rate: 1e-3}\n  - {<<: *s, name: t, epochs: 2}\n"
    )
    t = load_curriculum(_write(tmp_path, merged)).stages[1]
    assert (t.name, t.epochs, t.batch_size, t.learning_rate) == ("t", 2, 8, 1e-3)


def test_a_base_is_merged_key_by_key(tmp_path):
    _write(
        tmp_path,
        "data: {dir: d}\nmodel: {hidden_size: 64, num_attention_heads: 4, num_layers: 1}\n"
        f"stages: [{STAGE}]",
        "base.yaml",
    )
    child = _write(tmp_path, "base: base.yaml\nmodel: {num_layers: 3}\ntraining: {seed: 7}")
    curriculum = load_curriculum(child)
    assert curriculum.model == {"hidden_size": 64, "num_attention_heads": 4, "num_layers": 3}
    assert curriculum.training.seed == 7
    assert [stage.name for stage in curriculum.stages] == ["s"]


def test_base_cycles_are_refused(tmp_path):
    _write(tmp_path, "base: b.yaml", "a.yaml")
    _write(tmp_path, "base: a.yaml", "b.yaml")
    with pytest.raises(CurriculumError, match="cycle"):
        load_curriculum(tmp_path / "a.yaml")


SCHEDULED = (
    "data: {dir: d}\n"
    "training: {adam_beta2: 0.98, lr_scheduler_type: cosine, learning_rate: 2.0e-4, num_train_epochs: 3, "
    "per_device_train_batch_size: 4, gradient_accumulation_steps: 2, seed: 5}\n"
    "stages: [{name: a, corpus: c, tasks: [mlm]}, "
    "{name: b, corpus: c, tasks: [mlm], epochs: 1, batch_size: 32, learning_rate: 1.0e-5}]"
)


def test_training_takes_any_training_arguments_field_and_schedules_stages_without_their_own(tmp_path):
    curriculum = load_curriculum(_write(tmp_path, SCHEDULED), processes=2)
    a, b = curriculum.stages
    # 4 per device x 2 processes x 2 accumulation steps
    assert (a.learning_rate, a.epochs, a.gradient_accumulation_steps, a.batch_size) == (2e-4, 3, 2, 16)
    assert (b.learning_rate, b.epochs, b.gradient_accumulation_steps, b.batch_size) == (1e-5, 1, 2, 32)
    arguments = curriculum.training.arguments
    assert (arguments["adam_beta2"], arguments["lr_scheduler_type"], curriculum.training.seed) == (
        0.98,
        "cosine",
        5,
    )
    assert not {"learning_rate", "num_train_epochs", "per_device_train_batch_size"} & set(arguments)
    assert arguments["optim"] == "adamw_torch"  # the recipe's default stands where nothing replaces it


def test_the_command_line_wins_and_sets_every_stage(tmp_path):
    overrides = {"learning_rate": 5e-4, "per_device_train_batch_size": 2, "max_steps": 7, "seed": 9}
    curriculum = load_curriculum(
        _write(tmp_path, SCHEDULED), overrides={**overrides, "adam_beta2": 0.9}, processes=2
    )
    assert [(s.learning_rate, s.max_steps, s.batch_size) for s in curriculum.stages] == [(5e-4, 7, 8)] * 2
    assert (curriculum.training.seed, curriculum.training.arguments["adam_beta2"]) == (9, 0.9)
    assert [s.epochs for s in curriculum.stages] == [3, 1]  # not given: the file's
    assert (
        load_curriculum(_write(tmp_path, SCHEDULED), overrides={"max_steps": -1}).stages[0].max_steps is None
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"use_cpu": True}, r"--use_cpu: set by the run"),
        ({"learning_rate": 0.0}, r"--learning_rate: must be positive, got 0\.0"),
        ({"per_device_train_batch_size": -2}, r"--per_device_train_batch_size: must be positive"),
        ({"max_steps": 0}, r"--max_steps: must be positive, or -1 for none, got 0"),
        ({"learning_rate": float("nan")}, r"--learning_rate: must be a finite number, got nan"),
    ],
)
def test_command_line_values_the_run_cannot_use_name_the_flag(tmp_path, overrides, message):
    with pytest.raises(CurriculumError, match=message):
        load_curriculum(_write(tmp_path, SCHEDULED), overrides=overrides)
