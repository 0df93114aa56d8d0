"""transformers' own common model tests (`ModelTesterMixin`) run on the LXMERT-S models, in the default and
the LXMERT-compatible setting. Not part of the suite: transformers' pip package does not ship its tests, so
this file runs only on request, against the test files of the installed version's source release:

    pip download transformers==5.25.0 --no-deps --no-binary :all: -d /tmp/tf
    tar xzf /tmp/tf/transformers-5.25.0.tar.gz -C /tmp/tf
    pip install parameterized   # what those test files import
    export TRANSFORMERS_TESTS=/tmp/tf/transformers-5.25.0/tests
    python -m pytest -o addopts= tests/transformers_mixin.py

(`-o addopts=` drops this repository's `--strict-markers`: transformers' tests carry markers of their own.)
Each override below is one that transformers' own model test files make for a model like this one (LXMERT's
modality-named outputs, the task models' labels, the inputs beside `input_ids`). With transformers 5.25, 208
tests pass and 12 fail in the two settings, test_get_text_features_output_{0,2}, test_training and
test_training_gradient_checkpointing* (on `LxmertSModel`), for the reasons tests/test_model_common.py gives;
that file runs its own versions of all of them in the suite.
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
import types
import unittest
from pathlib import Path

import pytest
import torch
from model_inputs import random_inputs, random_labels, tiny_config, tiny_lxmert_compatible_config

from modeling_lxmert_s import (
    PRETRAINING_TASKS,
    LxmertSForImageTextRetrieval,
    LxmertSForPreTraining,
    LxmertSForQuestionAnswering,
    LxmertSModel,
)

if "TRANSFORMERS_TESTS" not in os.environ:
    pytest.skip(
        "set TRANSFORMERS_TESTS to transformers' tests folder (module docstring)", allow_module_level=True
    )


def _mixin() -> type:
    """`ModelTesterMixin` from TRANSFORMERS_TESTS, imported as a package of its own. The source release leaves
    out the export and generation test helpers that `test_modeling_common.py` imports; they add tests of
    export and of generation, which an encoder has no part in, so empty mixins stand in for them."""
    package = types.ModuleType("transformers_tests")
    package.__path__ = [str(Path(os.environ["TRANSFORMERS_TESTS"]))]
    sys.modules["transformers_tests"] = package
    for name, mixin in (
        ("exporters.test_export", "ExportTesterMixin"),
        ("generation.test_utils", "GenerationTesterMixin"),
    ):
        parent, _ = name.split(".")
        sys.modules.setdefault(
            f"transformers_tests.{parent}", types.ModuleType(f"transformers_tests.{parent}")
        )
        module = types.ModuleType(f"transformers_tests.{name}")
        setattr(module, mixin, type(mixin, (), {}))
        sys.modules[f"transformers_tests.{name}"] = module
    return importlib.import_module("transformers_tests.test_modeling_common").ModelTesterMixin


ModelTesterMixin = _mixin()
NUM_QA_LABELS = 6


class LxmertSModelTester:
    batch_size, seq_length, num_regions = 3, 8, 5
    hidden_size, num_hidden_layers, num_attention_heads, vocab_size = 16, 2, 2, 40
    is_training = True

    def __init__(self, parent: unittest.TestCase, make_config):
        self.parent, self.make_config = parent, make_config

    def get_config(self):
        return self.make_config()

    def prepare_config_and_inputs_for_common(self):
        config = self.make_config()
        return config, random_inputs(config, self.batch_size, self.seq_length, self.num_regions)


class LxmertSTests(ModelTesterMixin):
    all_model_classes = (
        LxmertSModel,
        LxmertSForPreTraining,
        LxmertSForQuestionAnswering,
        LxmertSForImageTextRetrieval,
    )
    test_torch_exportable = False
    # the model's inputs beside input_ids (visual_attention_mask is left out: the test pads it with integers)
    additional_model_inputs = ["visual_feats", "visual_pos", "position_ids"]
    # the image features' batch size is read from pixel_values; tests/test_model_common.py checks the shape
    skip_test_image_features_output_shape = True
    # tests/test_model_common.py says which parameters cannot get a gradient, and why
    test_all_params_have_gradient = False

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs = copy.deepcopy(inputs_dict)
        if return_labels:
            batch = len(inputs["input_ids"])
            if model_class is LxmertSForPreTraining:
                config = self.model_tester.get_config()
                labels = random_labels(config, inputs)
                names = {
                    n for task in config.pretraining_tasks for n in PRETRAINING_TASKS[task].head.label_names
                }
                inputs |= {name: labels[name] for name in names}
            elif model_class is LxmertSForQuestionAnswering:
                inputs["labels"] = torch.rand(
                    batch, NUM_QA_LABELS, generator=torch.Generator().manual_seed(0)
                )
            elif model_class is LxmertSForImageTextRetrieval:
                inputs["labels"] = torch.ones(batch)
        return inputs

    def _text_features_prepare_config_and_inputs(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        return config, {name: inputs[name] for name in ("input_ids", "attention_mask", "position_ids")}

    def _image_features_prepare_config_and_inputs(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        return config, {
            name: inputs[name] for name in ("visual_feats", "visual_pos", "visual_attention_mask")
        }

    # the VSC features pass no layer (tests/test_model_common.py)
    def _text_features_get_expected_num_attentions(self, model_tester=None):
        return 0

    def _image_features_get_expected_num_attentions(self, model_tester=None):
        return 0

    # LxmertModelTest's versions: hidden states and attentions per modality
    def _asked_for(self, model_class, flag: str) -> list[tuple]:
        """The model's tuple outputs with `flag` (output_attentions, ...) asked for by argument, then by the
        config."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        by_config = copy.deepcopy(config)
        setattr(by_config, flag, True)
        with torch.no_grad():
            return [
                model_class(config).eval()(**self._prepare_for_class({**inputs, flag: True}, model_class)),
                model_class(by_config).eval()(**self._prepare_for_class(inputs, model_class)),
            ]

    def test_attention_outputs(self):
        tester = self.model_tester
        regions = tester.num_regions + tester.get_config().visual_cls_token
        expected = [
            [tester.num_attention_heads, tester.seq_length, tester.seq_length],
            [tester.num_attention_heads, regions, regions],
            [tester.num_attention_heads, tester.seq_length, regions],
        ]
        for model_class in self.all_model_classes:
            for outputs in self._asked_for(model_class, "output_attentions"):
                for attentions, shape in zip(outputs[-3:], expected, strict=True):
                    self.assertEqual(len(attentions), tester.num_hidden_layers)
                    self.assertListEqual(list(attentions[0].shape[-3:]), shape)

    def test_hidden_states_output(self):
        tester = self.model_tester
        regions = tester.num_regions + tester.get_config().visual_cls_token
        for model_class in self.all_model_classes:
            for outputs in self._asked_for(model_class, "output_hidden_states"):
                language, vision = outputs[-2], outputs[-1]
                self.assertEqual(len(language), tester.num_hidden_layers + 1)
                self.assertEqual(len(vision), tester.num_hidden_layers + 1)
                self.assertListEqual(list(language[0].shape[-2:]), [tester.seq_length, tester.hidden_size])
                self.assertListEqual(list(vision[0].shape[-2:]), [regions, tester.hidden_size])

    def test_retain_grad_hidden_states_attentions(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        config.output_hidden_states = config.output_attentions = True
        outputs = self.all_model_classes[0](config)(**inputs_dict)
        kept = [
            outputs.language_hidden_states[0],
            outputs.language_attentions[0],
            outputs.vision_hidden_states[0],
            outputs.vision_attentions[0],
        ]
        for tensor in kept:
            tensor.retain_grad()
        outputs.language_output.flatten()[0].backward(retain_graph=True)
        outputs.vision_output.flatten()[0].backward(retain_graph=True)
        for tensor in kept:
            self.assertIsNotNone(tensor.grad)


class DefaultSettingTest(LxmertSTests, unittest.TestCase):
    def setUp(self):
        tasks = ["mlm", "vsc", "itm", "mrfr", "tits", "ifrs"]
        self.model_tester = LxmertSModelTester(
            self, lambda: tiny_config(num_qa_labels=NUM_QA_LABELS, pretraining_tasks=tasks)
        )


class LxmertCompatibleSettingTest(LxmertSTests, unittest.TestCase):
    def setUp(self):
        tasks = ["mlm", "mrfr", "moc", "itm", "vsc"]
        self.model_tester = LxmertSModelTester(
            self, lambda: tiny_lxmert_compatible_config(num_qa_labels=NUM_QA_LABELS, pretraining_tasks=tasks)
        )
