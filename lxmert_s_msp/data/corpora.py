"""Build one corpus from public files: `python -m lxmert_s_msp.data.corpora KIND --store STORE --out DIR ...`.

KIND is tokens, phrases or captions (the pre-training stages' corpora), vqa, gqa, nlvr2 or flickr30k (the
downstream tasks'). The command reads its files with `lxmert_s_msp.data.readers`, builds the corpus with
`lxmert_s_msp.data.corpus_builders` and saves it with `save_corpus`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from datasets import concatenate_datasets, load_from_disk

from faster_rcnn_vg import FasterRcnnVgConfig
from lxmert_s_msp.cli import accept_underscores, run
from lxmert_s_msp.data.corpus_builders import (
    Corpus,
    caption_corpus,
    first_repeat,
    flickr30k_dataset,
    load_answer_vocab,
    nlvr2_dataset,
    phrase_corpus,
    qa_dataset,
    save_corpus,
    token_corpus,
)
from lxmert_s_msp.data.readers import (
    build_answer_vocab,
    read_class_vocab,
    read_coco_captions,
    read_flickr30k_karpathy,
    read_lxmert_nlvr2_json,
    read_lxmert_pretrain_json,
    read_lxmert_qa_json,
    read_vg_region_descriptions,
    read_vqa_official,
)
from lxmert_s_msp.data.store import FeatureStore

logger = logging.getLogger(__name__)
# The object classes of bottom-up-attention's Visual Genome detector: those of LXMERT's features and of
# `faster_rcnn_vg`, whose `objects_vocab.txt` has a line for each.
DETECTOR_CLASSES = FasterRcnnVgConfig().num_object_classes


def _concatenate(parts: list[Corpus]) -> Corpus:
    """One corpus from the corpora of several input files (each built with its own file as origin)."""
    return Corpus(
        concatenate_datasets([part.dataset for part in parts]),
        dropped=sum(part.dropped for part in parts),
        answer_vocab=parts[0].answer_vocab,
        empty=sum(part.empty for part in parts),
    )


def _build_tokens(args: argparse.Namespace, store: FeatureStore) -> Corpus:
    images = None
    if args.images_of is not None:
        images = load_from_disk(str(args.images_of))["image_id"]
    vocab = read_class_vocab(args.object_vocab)
    if len(vocab) != args.detector_classes:
        raise ValueError(
            f"{args.object_vocab}: {len(vocab)} class names, but the detector has {args.detector_classes} "
            "object classes: line i names class i, so a line missing or added shifts every name after it "
            "(--detector-classes gives another detector's count)"
        )
    if images is None:
        logger.warning(
            "tokens: no --images-of, so every one of the store's %d images gets a row, the images of "
            "downstream validation and test splits included; give the caption corpus (--images-of) to keep "
            "pre-training to its images, as the paper does",
            len(store),
        )
    return token_corpus(store, vocab, images)


def _build_phrases(args: argparse.Namespace, store: FeatureStore) -> Corpus:
    records = read_vg_region_descriptions(args.region_descriptions)
    return phrase_corpus(records, store, drop_missing=args.drop_missing, origin=args.region_descriptions)


def _build_captions(args: argparse.Namespace, store: FeatureStore) -> Corpus:
    inputs = [(path, read_coco_captions(path)) for path in args.coco]
    inputs += [(path, read_lxmert_pretrain_json(path, args.sources)) for path in args.lxmert]
    return _concatenate(
        [
            caption_corpus(records, store, drop_missing=args.drop_missing, origin=path)
            for path, records in inputs
        ]
    )


def _build_questions(args: argparse.Namespace, store: FeatureStore) -> Corpus:
    annotations = args.annotations or [None] * len(args.questions)
    inputs = [
        (questions, read_vqa_official(questions, annotations_path, coco_split))
        for questions, annotations_path, coco_split in zip(
            args.questions, annotations, args.coco_split, strict=True
        )
    ]
    inputs += [(path, read_lxmert_qa_json(path)) for path in args.lxmert]
    origins = [(path, record.question_id) for path, records in inputs for record in records]
    repeat = first_repeat([question_id for _, question_id in origins])
    if repeat is not None:
        (first, question_id), (second, _) = origins[repeat[0]], origins[repeat[1]]
        raise ValueError(
            f"question_id {question_id} is the id of a record of {first} and of {second}: each question must "
            "be listed once"
        )
    if args.answers:
        answer_vocab = load_answer_vocab(args.answers)
    else:
        min_count = args.default_min_count if args.min_count is None else args.min_count
        answer_vocab = build_answer_vocab((record for _, records in inputs for record in records), min_count)
        if not answer_vocab:
            raise ValueError(
                f"{', '.join(str(path) for path, _ in inputs)}: no answer is the answer of >= "
                f"{min_count} questions, so the answer vocabulary would be empty "
                "(lower --min-count, or give --answers)"
            )
        logger.info(
            "answer vocabulary: %d answers seen as the answer of >= %d questions",
            len(answer_vocab),
            min_count,
        )
    return _concatenate(
        [
            qa_dataset(records, store, answer_vocab, drop_missing=args.drop_missing, origin=path)
            for path, records in inputs
        ]
    )


def _build_nlvr2(args: argparse.Namespace, store: FeatureStore) -> Corpus:
    return _concatenate(
        [
            nlvr2_dataset(read_lxmert_nlvr2_json(path), store, drop_missing=args.drop_missing, origin=path)
            for path in args.lxmert
        ]
    )


def _build_flickr30k(args: argparse.Namespace, store: FeatureStore) -> Corpus:
    images = read_flickr30k_karpathy(args.karpathy)
    return flickr30k_dataset(images, store, drop_missing=args.drop_missing, origin=args.karpathy)


def _add_question_options(parser: argparse.ArgumentParser, min_count: int) -> None:
    parser.add_argument("--lxmert", nargs="+", default=[], help="LXMERT question json files")
    vocabulary = parser.add_mutually_exclusive_group(required=True)
    vocabulary.add_argument(
        "--answers",
        help="the answer vocabulary: the training corpus's (its folder or answers.json) or LXMERT's "
        "trainval_label2ans.json; validation and test corpora must use the one the classifier is trained on",
    )
    vocabulary.add_argument(
        "--new-answer-vocab",
        action="store_true",
        help="make the vocabulary from these files (the training split): answers of >= --min-count questions",
    )
    parser.add_argument(
        "--min-count",
        type=int,
        help=f"with --new-answer-vocab: keep answers of >= this many questions (default {min_count})",
    )
    parser.set_defaults(build=_build_questions, default_min_count=min_count)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lxmert_s_msp.data.corpora",
        description="Build one corpus as a datasets.Dataset whose rows point at a feature store.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", required=True, help="feature store folder")
    common.add_argument("--out", required=True, help="output folder (datasets.load_from_disk reads it)")
    common.add_argument(
        "--drop-missing", action="store_true", help="drop records whose image is not in the store; count them"
    )
    common.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    kinds = parser.add_subparsers(dest="kind", required=True)

    tokens = kinds.add_parser("tokens", parents=[common], help="stage 1: detected object names per image")
    tokens.add_argument("--object-vocab", required=True, help="Visual Genome objects_vocab.txt")
    tokens.add_argument(
        "--detector-classes",
        type=int,
        default=DETECTOR_CLASSES,
        help="object classes of the detector that made the store; --object-vocab must name each (default: "
        "%(default)s, bottom-up-attention's, of LXMERT's features and of faster_rcnn_vg)",
    )
    tokens.add_argument(
        "--images-of",
        help="a saved corpus (e.g. the caption corpus) whose images alone get a row, as in the paper",
    )
    tokens.set_defaults(build=_build_tokens)

    phrases = kinds.add_parser(
        "phrases", parents=[common], help="stage 2: each image's VG phrases without verbs"
    )
    phrases.add_argument(
        "--region-descriptions", required=True, help="Visual Genome region_descriptions.json"
    )
    phrases.set_defaults(build=_build_phrases)

    captions = kinds.add_parser("captions", parents=[common], help="stage 3: one row per caption")
    captions.add_argument("--coco", nargs="+", default=[], help="COCO captions_*.json files")
    captions.add_argument("--lxmert", nargs="+", default=[], help="LXMERT pre-training json files")
    captions.add_argument("--sources", nargs="+", help="sentf sources to keep from --lxmert, e.g. mscoco vg")
    captions.set_defaults(build=_build_captions)

    vqa = kinds.add_parser("vqa", parents=[common], help="VQA v2: official json or LXMERT's vqa/*.json")
    vqa.add_argument("--questions", action="append", default=[], help="official questions json (repeatable)")
    vqa.add_argument(
        "--annotations", action="append", default=[], help="official annotations json, per --questions"
    )
    vqa.add_argument(
        "--coco-split", action="append", default=[], help="train2014 / val2014 / test2015, per --questions"
    )
    _add_question_options(vqa, min_count=9)

    gqa = kinds.add_parser("gqa", parents=[common], help="GQA: LXMERT's gqa/*.json")
    gqa.set_defaults(questions=[], annotations=[], coco_split=[])
    _add_question_options(gqa, min_count=1)

    nlvr2 = kinds.add_parser("nlvr2", parents=[common], help="NLVR2: LXMERT's nlvr2/*.json")
    nlvr2.add_argument("--lxmert", nargs="+", required=True, help="LXMERT nlvr2 json files")
    nlvr2.set_defaults(build=_build_nlvr2)

    flickr30k = kinds.add_parser("flickr30k", parents=[common], help="Flickr30k retrieval, Karpathy splits")
    flickr30k.add_argument("--karpathy", required=True, help="dataset_flickr30k.json")
    flickr30k.set_defaults(build=_build_flickr30k)
    return parser


def _check_inputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.kind == "captions":
        if not args.coco and not args.lxmert:
            parser.error("captions: give --coco and/or --lxmert files")
        if args.lxmert and not args.sources:
            parser.error("captions: --lxmert needs --sources (e.g. --sources mscoco vg)")
    if args.kind in ("vqa", "gqa"):
        if not args.questions and not args.lxmert:
            parser.error(
                f"{args.kind}: give --questions (with --annotations, --coco-split) or --lxmert files"
            )
        if len(args.coco_split) != len(args.questions) or len(args.annotations) not in (
            0,
            len(args.questions),
        ):
            parser.error("vqa: give one --coco-split, and one --annotations or none at all, per --questions")
        if args.answers and args.min_count is not None:
            parser.error(f"{args.kind}: --min-count applies to --new-answer-vocab, not to --answers")
        if args.new_answer_vocab and args.questions and not args.annotations:
            parser.error(
                f"{args.kind}: --new-answer-vocab makes the vocabulary from the answers, and --questions "
                "without --annotations have none: give --annotations (the official annotations json) per "
                "--questions, or --answers with the training split's vocabulary (a test split's questions "
                "have no annotations)"
            )
    if Path(args.out).exists() and not args.overwrite:
        parser.error(f"{args.out} exists; pass --overwrite to replace it")


def _input_files(args: argparse.Namespace) -> list[str]:
    """The input files a command was given, to name them in errors."""
    names = ("object_vocab", "region_descriptions", "karpathy", "coco", "lxmert", "questions", "annotations")
    found = []
    for name in names:
        value = getattr(args, name, None)
        found += [str(path) for path in (value if isinstance(value, list) else [value] if value else [])]
    return found or [str(args.store)]


def main(argv: Sequence[str] | None = None) -> Corpus:
    parser = accept_underscores(_parser())
    args = parser.parse_args(argv)
    _check_inputs(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    corpus = args.build(args, FeatureStore(args.store))
    if len(corpus.dataset) == 0:
        raise ValueError(
            f"{', '.join(_input_files(args))}: no {args.kind} rows ({corpus.dropped} records dropped "
            "because their image is not in the store); nothing is saved"
        )
    save_corpus(corpus, args.out, overwrite=args.overwrite)
    logger.info(
        "%s: %d rows saved to %s; %d records dropped (image not in the store), %d texts with no word dropped",
        args.kind,
        len(corpus.dataset),
        args.out,
        corpus.dropped,
        corpus.empty,
    )
    return corpus


if __name__ == "__main__":
    run(main)
