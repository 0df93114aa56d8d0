"""A saved folder carries its code: it loads through the Auto classes where this package is absent."""

from __future__ import annotations

import email.message
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from model_inputs import random_inputs, random_labels, tiny_config
from safetensors.torch import save_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoProcessor,
    LxmertConfig,
    LxmertForPreTraining,
)

from lxmert_s_msp.data.tokenizer import SPECIAL_TOKENS, wordpiece_tokenizer_from_vocabulary
from lxmert_s_msp.hub import model_card
from modeling_lxmert_s import LxmertSConfig, LxmertSForPreTraining, LxmertSModel

REPO = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter whose import of modeling_lxmert_s fails, from a folder outside the repo.
ISOLATED_LOAD = textwrap.dedent(
    """
    import sys
    sys.modules["modeling_lxmert_s"] = sys.modules["lxmert_s_msp"] = sys.modules["faster_rcnn_vg"] = None
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel, AutoModelForPreTraining, AutoModelForVisualQuestionAnswering

    checkpoint, inputs_file, out_file = sys.argv[1:]
    inputs = load_file(inputs_file)
    labels = {k: v for k, v in inputs.items() if (k.endswith(("_labels", "_mask", "_confidences", "_targets"))
              or k == "image_ids") and k not in ("attention_mask", "visual_attention_mask")}
    model_inputs = {k: v for k, v in inputs.items() if k not in labels}
    base = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    full = AutoModelForPreTraining.from_pretrained(checkpoint, trust_remote_code=True).eval()
    assert "modeling_lxmert_s" not in type(base).__module__.split(".")[0]
    assert full.heads["mlm"].decoder.weight is full.lxmert.embeddings.word_embeddings.weight
    vqa = AutoModelForVisualQuestionAnswering.from_pretrained(checkpoint, trust_remote_code=True)
    assert type(vqa).__name__ == "LxmertSForQuestionAnswering"
    with torch.no_grad():
        pooled = base(**model_inputs).pooled_output
        output = full(**model_inputs, **labels)
    save_file({"pooled": pooled, "loss": output.loss.reshape(1)}, out_file)
    """
)


def test_saved_folder_loads_without_the_package(tmp_path):
    config = tiny_config()
    model = LxmertSForPreTraining(config).eval()
    checkpoint = tmp_path / "ckpt"
    model.save_pretrained(checkpoint)

    assert {"config.json", "model.safetensors"} <= {path.name for path in checkpoint.iterdir()}
    assert not list(checkpoint.glob("*.bin"))
    assert json.loads((checkpoint / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_lxmert_s.LxmertSConfig",
        "AutoModel": "modeling_lxmert_s.LxmertSModel",
        "AutoModelForPreTraining": "modeling_lxmert_s.LxmertSForPreTraining",
        "AutoModelForQuestionAnswering": "modeling_lxmert_s.LxmertSForQuestionAnswering",
        "AutoModelForVisualQuestionAnswering": "modeling_lxmert_s.LxmertSForQuestionAnswering",
    }
    for code in (
        "configuration_lxmert_s.py",
        "modeling_lxmert_s.py",
        "pretraining_pieces.py",
        "input_checks.py",
    ):
        assert (checkpoint / code).is_file(), code

    inputs = random_inputs(config)
    labels = random_labels(config, inputs)
    save_file({**inputs, **labels}, str(tmp_path / "inputs.safetensors"))
    with torch.no_grad():
        expected = model(**inputs, **labels)

    script = tmp_path / "load.py"
    script.write_text(ISOLATED_LOAD)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(checkpoint),
            str(tmp_path / "inputs.safetensors"),
            str(tmp_path / "o"),
        ],
        cwd=outside,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # the encoder and the VQA model leave the checkpoint's heads aside, and say so in one line each
    assert "LOAD REPORT" not in result.stderr, result.stderr[-3000:]
    # a head without weights (tag) leaves nothing in the checkpoint to name
    unused = ", ".join(
        f"heads.{name}" for name, head in sorted(model.heads.items()) if list(head.parameters())
    )
    unused = f"the checkpoint's heads {unused} are not used\n"
    assert f"LxmertSModel: {unused}" in result.stderr
    assert f"LxmertSForQuestionAnswering: heads answer_head start fresh; {unused}" in result.stderr
    from safetensors.torch import load_file

    loaded = load_file(str(tmp_path / "o"))
    assert torch.allclose(loaded["pooled"], expected.pooled_output, atol=1e-6)
    assert torch.allclose(loaded["loss"][0], expected.loss, atol=1e-6)


def test_the_package_registers_the_auto_classes(tmp_path):
    config = tiny_config(pretraining_tasks=["itm"])
    LxmertSForPreTraining(config).save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), LxmertSConfig)
    assert type(AutoModel.from_pretrained(tmp_path)) is LxmertSModel
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is LxmertSForPreTraining


def test_convert_recipe_writes_a_loadable_lxmert_s_folder(tmp_path):
    lxmert_config = LxmertConfig(
        hidden_size=16,
        num_attention_heads=2,
        intermediate_size=32,
        vocab_size=40,
        max_position_embeddings=24,
        visual_feat_dim=12,
        num_object_labels=7,
        num_attr_labels=5,
        num_qa_labels=3,
        l_layers=1,
        r_layers=1,
        x_layers=2,
    )
    LxmertForPreTraining(lxmert_config).save_pretrained(tmp_path / "lxmert")
    convert = [sys.executable, str(REPO / "recipes" / "convert_lxmert_checkpoint.py"), "lxmert", "converted"]
    # saved without its tokenizer: the processor would get an empty vocabulary
    refused = subprocess.run(convert, cwd=tmp_path, capture_output=True, text=True)
    assert refused.returncode != 0 and "pass the checkpoint's tokenizer with --tokenizer" in refused.stderr
    assert "Traceback" not in refused.stderr  # a refusal, not a bug
    assert not (tmp_path / "converted").exists()
    words = [f"w{index}" for index in range(lxmert_config.vocab_size - len(SPECIAL_TOKENS))]
    wordpiece_tokenizer_from_vocabulary(words).save_pretrained(tmp_path / "tokenizer")
    result = subprocess.run(
        [*convert, "--tokenizer", "tokenizer"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    processor = AutoProcessor.from_pretrained(tmp_path / "converted", trust_remote_code=True)
    assert len(processor.tokenizer) == lxmert_config.vocab_size and processor.num_regions == 36
    card = ModelCard.load(tmp_path / "converted" / "README.md")
    assert card.data.license == "apache-2.0" and card.data.pipeline_tag == "feature-extraction"
    assert card.data.base_model is None  # a local folder is no Hub base model, and its path stays out
    assert str(tmp_path) not in card.content and "`lxmert`" in card.text
    # real weights: what they are for and their limits, how to cite, where the code is
    assert "## Intended use and limitations" in card.text and "out of its distribution" in card.text
    assert (
        "@inproceedings{tan2019lxmert" in card.text and "`recipes/convert_lxmert_checkpoint.py`" in card.text
    )
    converted = AutoModelForPreTraining.from_pretrained(tmp_path / "converted", trust_remote_code=True)
    assert set(converted.heads) == {"mlm", "mrfr", "moc", "itm"}
    assert converted.config.pooler_type == "language" and not converted.config.visual_cls_token
    assert len(converted.lxmert.encoder.x_layers) == 2
    original = LxmertForPreTraining.from_pretrained(tmp_path / "lxmert").state_dict()
    ours = converted.state_dict()
    assert torch.equal(
        ours["lxmert.encoder.x_layers.1.visn_output.dense.weight"],
        original["lxmert.encoder.x_layers.1.visn_output.dense.weight"],
    )
    assert torch.equal(
        ours["heads.mrfr.transform.dense.weight"], original["obj_predict_head.transform.dense.weight"]
    )
    assert torch.equal(ours["heads.itm.classifier.bias"], original["cls.seq_relationship.bias"])


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        (
            {"Home-page": "https://example.org/lxmert-s-msp"},
            "[`lxmert-s-msp`](https://example.org/lxmert-s-msp)",
        ),
        ({"Project-URL": "Source, https://example.org/code"}, "[`lxmert-s-msp`](https://example.org/code)"),
        (None, "The `lxmert-s-msp` package wrote"),  # run uninstalled, from the repository
    ],
    ids=["home-page", "project-url", "not-installed"],
)
def test_the_card_links_the_code_the_package_declares(monkeypatch, declared, expected):
    def package_metadata(name):
        if declared is None:
            raise model_card.metadata.PackageNotFoundError(name)
        message = email.message.Message()
        for field, value in declared.items():
            message[field] = value
        return message

    monkeypatch.setattr(model_card.metadata, "metadata", package_metadata)
    assert expected in " ".join(model_card.code_section("recipes/finetune.py --task vqa"))
