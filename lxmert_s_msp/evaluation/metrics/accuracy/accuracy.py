"""Plain accuracy (GQA, NLVR2) as a local `evaluate` metric.

Self-contained because `evaluate.load` copies this script alone into its module cache.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Fraction of predictions equal to their reference label: GQA's accuracy over answer ids and NLVR2's over
true/false labels.
"""

_CITATION = """\
@inproceedings{hudson2019gqa,
  title={{GQA}: A New Dataset for Real-World Visual Reasoning and Compositional Question Answering},
  author={Hudson, Drew A. and Manning, Christopher D.},
  booktitle={CVPR},
  year={2019}
}
@inproceedings{suhr2019corpus,
  title={A Corpus for Reasoning about Natural Language Grounded in Photographs},
  author={Suhr, Alane and Zhou, Stephanie and Zhang, Ally and Zhang, Iris and Bai, Huajun and Artzi, Yoav},
  booktitle={ACL},
  year={2019}
}
"""

_INPUTS_DESCRIPTION = """\
Args:
    predictions (`list[int]`): one predicted label per record.
    references (`list[int]`): the true label of each record.
Returns:
    accuracy (`float`): fraction of correct predictions, in [0, 1].
Examples:
    >>> metric = evaluate.load("lxmert_s_msp/evaluation/metrics/accuracy")
    >>> metric.compute(predictions=[1, 0, 1, 1], references=[1, 1, 1, 0])
    {'accuracy': 0.5}
"""


class Accuracy(evaluate.Metric):
    """Fraction of exact label matches, in [0, 1]."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions: list[int], references: list[int]) -> dict[str, float]:
        if not predictions:
            raise ValueError("accuracy needs at least one record")
        return {"accuracy": float(np.mean(np.asarray(predictions) == np.asarray(references)))}
