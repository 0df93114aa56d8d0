"""Convert a transformers LXMERT checkpoint into a Hub-ready LXMERT-S folder.

    python recipes/convert_lxmert_checkpoint.py unc-nlp/lxmert-base-uncased out/lxmert-s-from-lxmert

The input is anything `LxmertForPreTraining.from_pretrained` reads (a local folder or a Hub name).
The output carries config (LXMERT-compatible setting), safetensors weights, the modeling code, a processor
on the checkpoint's tokenizer (--tokenizer when the checkpoint has none) and a model card, so
`AutoModelForPreTraining.from_pretrained(out, trust_remote_code=True)` and `AutoProcessor` load it without
this package. LXMERT's language and object-relationship encoders and its QA head are dropped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transformers import LxmertForPreTraining

from lxmert_s_msp.cli import accept_underscores, run
from lxmert_s_msp.data.store import atomic_write_text, replace_folder
from lxmert_s_msp.data.tokenizer import load_tokenizer
from lxmert_s_msp.hub.model_card import converted_card
from modeling_lxmert_s import LxmertSConfig, LxmertSForPreTraining, convert_lxmert_state_dict
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor


def convert_checkpoint(source: str, output_dir: Path, tokenizer: str | None = None) -> LxmertSForPreTraining:
    """Write the LXMERT-S folder of `source` into `output_dir` atomically; the processor's tokenizer is
    `source`'s own, or `tokenizer`'s (a folder or Hub name) when given."""
    lxmert = LxmertForPreTraining.from_pretrained(source)
    text_tokenizer = load_tokenizer(tokenizer or source)
    # A folder without tokenizer files still loads, as an empty vocabulary: compare with the embeddings.
    if len(text_tokenizer) != lxmert.config.vocab_size:
        raise ValueError(
            f"{tokenizer or source}: the tokenizer has {len(text_tokenizer)} tokens, the checkpoint's word "
            f"embeddings {lxmert.config.vocab_size}; pass the checkpoint's tokenizer with --tokenizer "
            "(LXMERT's is bert-base-uncased)"
        )
    flags = lxmert.config
    tasks = ["mlm"] if flags.task_mask_lm else []
    tasks += ["mrfr", "moc"] if flags.task_obj_predict else []
    tasks += ["itm"] if flags.task_matched else []
    config = LxmertSConfig.from_lxmert_config(lxmert.config, pretraining_tasks=tasks)
    model = LxmertSForPreTraining(config)
    try:
        model.load_state_dict(convert_lxmert_state_dict(lxmert.state_dict()))
    except RuntimeError as error:
        raise ValueError(f"{source}: weights did not map onto LXMERT-S: {error}") from error
    processor = LxmertSProcessor(text_tokenizer)  # LXMERT's 36 regions and 20 tokens
    work = output_dir.with_name(output_dir.name + ".partial")
    model.save_pretrained(work)
    processor.save_pretrained(work)
    atomic_write_text(work / "README.md", converted_card(source, model, processor))
    replace_folder(work, output_dir)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", help="LXMERT checkpoint: a local folder or a Hub name")
    parser.add_argument("output_dir", type=Path, help="where the Hub-ready LXMERT-S folder is written")
    parser.add_argument(
        "--tokenizer", help="tokenizer folder or Hub name, for a checkpoint saved without its tokenizer"
    )
    args = accept_underscores(parser).parse_args(argv)
    convert_checkpoint(args.source, args.output_dir, args.tokenizer)
    print(f"wrote {args.output_dir}")


if __name__ == "__main__":
    run(main)
