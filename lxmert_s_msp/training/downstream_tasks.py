"""The downstream tasks of the MSP paper (§4.2), one entry each: its model class, the paper's epochs (§4.4),
its splits and labels, its collator (from the data folder, the processor, the rows, the label names and the
seed: `CollatorFactory`), its scorer, and its data and task on the Hub for the model card. `finetune` and
`evaluate_checkpoint` read nothing else of a task: a new task is a new entry.
"""

from __future__ import annotations

from lxmert_s_msp.data.downstream_collators import NLVR2Collator, QACollator, RetrievalCollator
from lxmert_s_msp.data.downstream_data import Flickr30kImages, LabelledCorpora, QuestionCorpora
from lxmert_s_msp.evaluation.downstream import (
    AnswerAccuracy,
    ClassificationScorer,
    DownstreamTask,
    LabelAccuracy,
    RetrievalScorer,
    SoftScoreAccuracy,
    answer_prior_floor,
    chance_floor,
)
from modeling_lxmert_s import (
    LxmertSForImageTextRetrieval,
    LxmertSForQuestionAnswering,
    LxmertSForVisualReasoning,
)

GQA_NEEDS_REAL_DATA = (
    "GQA needs real data: the synthetic world has no GQA corpus. Build corpora/gqa_train and "
    "corpora/gqa_val in a data folder with `python -m lxmert_s_msp.data.corpora gqa --store <folder>/store "
    "--out <folder>/corpora/gqa_train --lxmert gqa/train.json --answers gqa/trainval_label2ans.json` (and "
    "the same for val, with the same --answers), then pass --data_dir <folder> (README, 'The data pipeline')"
)
VISUAL_QUESTION_ANSWERING = ("visual-question-answering", "Visual question answering")


TASKS = {
    "vqa": DownstreamTask(
        "vqa",
        LxmertSForQuestionAnswering,
        epochs=6,
        data=QuestionCorpora("vqa"),
        collator=lambda data, processor, rows, labels, seed: QACollator(data.store, processor, labels),
        scorer=ClassificationScorer(SoftScoreAccuracy, answer_prior_floor),
        hub_dataset=("HuggingFaceM4/VQAv2", "VQA v2"),
        hub_task=VISUAL_QUESTION_ANSWERING,
    ),
    "gqa": DownstreamTask(
        "gqa",
        LxmertSForQuestionAnswering,
        epochs=5,
        data=QuestionCorpora("gqa", not_in_world=GQA_NEEDS_REAL_DATA),
        collator=lambda data, processor, rows, labels, seed: QACollator(data.store, processor, labels),
        scorer=ClassificationScorer(AnswerAccuracy, answer_prior_floor),
        hub_dataset=("lmms-lab/GQA", "GQA"),
        hub_task=VISUAL_QUESTION_ANSWERING,
    ),
    "nlvr2": DownstreamTask(
        "nlvr2",
        LxmertSForVisualReasoning,
        epochs=8,
        data=LabelledCorpora("nlvr2", ("false", "true")),
        collator=lambda data, processor, rows, labels, seed: NLVR2Collator(data.store, processor),
        scorer=ClassificationScorer(LabelAccuracy, chance_floor),
        hub_dataset=("lil-lab/nlvr", "NLVR2"),
        hub_task=("visual-reasoning", "Visual reasoning"),  # no Hub task id: the result names its own
    ),
    "retrieval": DownstreamTask(
        "retrieval",
        LxmertSForImageTextRetrieval,
        epochs=8,
        data=Flickr30kImages(),
        # each matched pair of the training images with a random caption, a random image and a hard caption
        collator=lambda data, processor, rows, labels, seed: RetrievalCollator(
            data.store, processor, rows, data.hard_negatives(), seed=seed
        ),
        scorer=RetrievalScorer(),
        hub_dataset=("nlphuji/flickr_1k_test_image_text_retrieval", "Flickr30k"),
        hub_task=("image-text-retrieval", "Image-text retrieval"),  # no Hub task id either
    ),
}
