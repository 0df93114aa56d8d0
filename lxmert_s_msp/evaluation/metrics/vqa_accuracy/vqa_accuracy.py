"""Official VQA accuracy (Antol et al., 2015; Goyal et al., 2017) as a local `evaluate` metric.

Self-contained because `evaluate.load` copies this script alone into its module cache.
"""

import functools
import re

import datasets
import evaluate

_DESCRIPTION = """\
VQA accuracy of free-form answers against the human answers of each question (10 in VQA v1/v2).
An answer is fully right when at least 3 humans gave it: for each leave-one-out subset of the annotators,
accuracy = min(#humans in the subset who gave the answer / 3, 1), averaged over the subsets, then over the
questions. With a single annotator there is no subset to leave out: min(#matches / 3, 1) on that answer.

Answers are normalised with the official VQA evaluation's rules: "\\n" and "\\t" become spaces; punctuation
is dropped (next to a space, or anywhere when the answer holds a number like "1,000") or becomes a space
(inside a word: "black/white" -> "black white"); periods not followed by a digit are dropped; then
lower-case, number words "zero".."ten" (and "none") become digits, the articles a/an/the are removed,
apostrophe-less contractions are restored ("dont" -> "don't") and whitespace is collapsed.
The official script applies all of this to the prediction but only the punctuation step, and only when the
annotators disagree, to the human answers, because the released annotations are already normalised; here
both sides get every step, which gives the official score whenever the human answers are already
normalised and a fair one when they are raw.
"""

_CITATION = """\
@inproceedings{antol2015vqa,
  title={{VQA}: Visual Question Answering},
  author={Antol, Stanislaw and Agrawal, Aishwarya and Lu, Jiasen and Mitchell, Margaret and Batra, Dhruv
          and Zitnick, C. Lawrence and Parikh, Devi},
  booktitle={ICCV},
  year={2015}
}
@inproceedings{goyal2017making,
  title={Making the {V} in {VQA} Matter: Elevating the Role of Image Understanding in Visual Question
         Answering},
  author={Goyal, Yash and Khot, Tejas and Summers-Stay, Douglas and Batra, Dhruv and Parikh, Devi},
  booktitle={CVPR},
  year={2017}
}
"""

_INPUTS_DESCRIPTION = """\
Args:
    predictions (`list[str]`): one answer per question.
    references (`list[list[str]]`): per question, every human answer (at least one; 10 in VQA v2).
Returns:
    vqa_accuracy (`float`): mean VQA accuracy in [0, 1].
Examples:
    >>> metric = evaluate.load("lxmert_s_msp/evaluation/metrics/vqa_accuracy")
    >>> metric.compute(predictions=["Two"], references=[["2", "2", "3"] + ["4"] * 7])
    {'vqa_accuracy': 0.6}
"""

# The official rules' tables. The contractions are copied verbatim so they can be diffed against the
# official script; its capitalised keys never match once answers are lower-cased, as in the official script.
# fmt: off
_PUNCTUATION = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've",
    "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd",
    "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've",
    "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}
# fmt: on


def _strip_punctuation(answer: str) -> str:
    # Marks are tested against the unmodified answer, as the official script does.
    in_number = _DIGIT_COMMA_DIGIT.search(answer) is not None
    stripped = answer
    for mark in _PUNCTUATION:
        glued = in_number or f"{mark} " in answer or f" {mark}" in answer
        stripped = stripped.replace(mark, "" if glued else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", stripped)


def normalize_vqa_answer(answer: str) -> str:
    """The official VQA evaluation's answer normalisation (see `_DESCRIPTION`)."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    words = [_NUMBER_WORDS.get(word, word) for word in _strip_punctuation(answer).lower().split()]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """Leave-one-out VQA accuracy of one normalised `prediction` against normalised human `answers`."""
    matches = answers.count(prediction)
    if len(answers) == 1:
        return min(matches / 3, 1.0)
    # Leaving out one of the agreeing annotators leaves matches - 1; leaving out any other leaves all of them.
    others = len(answers) - matches
    return (matches * min((matches - 1) / 3, 1.0) + others * min(matches / 3, 1.0)) / len(answers)


class VqaAccuracy(evaluate.Metric):
    """Official VQA accuracy, in [0, 1]."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            homepage="https://visualqa.org/evaluation.html",
            reference_urls=["https://github.com/GT-Vision-Lab/VQA"],
        )

    def _compute(self, predictions: list[str], references: list[list[str]]) -> dict[str, float]:
        if not predictions:
            raise ValueError("vqa_accuracy needs at least one record")
        # Human answers repeat across questions (yes, no, 2, ...): normalise each distinct string once.
        normalize = functools.lru_cache(maxsize=None)(normalize_vqa_answer)
        total = 0.0
        for index, (prediction, answers) in enumerate(zip(predictions, references, strict=True)):
            if not answers:
                raise ValueError(f"record {index}: field 'references' is empty; give at least one answer")
            total += vqa_accuracy(normalize(prediction), [normalize(answer) for answer in answers])
        return {"vqa_accuracy": total / len(predictions)}
