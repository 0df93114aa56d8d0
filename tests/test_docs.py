"""The README is the front door and docs/ the manual: every relative link of either resolves (a section that
moves takes its links along; a page renamed or a heading reworded breaks no link), and every manual page can
be reached from the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from model_inputs import tiny_config

from lxmert_s_msp.data.tokenizer import SPECIAL_TOKENS, wordpiece_tokenizer_from_vocabulary
from modeling_lxmert_s import LxmertSForQuestionAnswering
from modeling_lxmert_s.processing_lxmert_s import LxmertSProcessor

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MANUAL = sorted((REPO / "docs").glob("*.md"))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCED = re.compile(r"```.*?```", re.DOTALL)
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def _links(page: Path) -> list[str]:
    """The targets of the page's Markdown links and images outside code, without URLs (https:, mailto:)."""
    text = CODE.sub("", page.read_text())
    return [target for target in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of the page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ +(.+?) *$", FENCED.sub("", page.read_text()), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", [README, *MANUAL], ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists() or (anchor and anchor not in _anchors(resolved)):
            broken.append(target)
    assert not broken, f"{page.name} links to what does not exist: {broken}"


def test_every_manual_page_is_linked_from_the_readme():
    linked = {(REPO / target.partition("#")[0]).resolve() for target in _links(README)}
    assert not [str(page.relative_to(REPO)) for page in MANUAL if page.resolve() not in linked]


def test_the_readme_is_a_front_door_under_200_lines():
    assert len(README.read_text().splitlines()) < 200


def test_the_image_snippet_builds_its_processor_from_the_checkpoint_offline(tmp_path):
    """docs/data.md's snippet for one's own images built its processor on `bert-base-uncased`, which fails
    offline (as the tests run); the checkpoint folder's own processor is there, and tokenizes as the model
    was trained. Runs the snippet up to the call that runs the detector, whose weights are the Hub's."""
    snippet = re.search(
        r"```python\n(from PIL import Image\n.*?)```", (REPO / "docs" / "data.md").read_text(), re.S
    )
    setup = snippet.group(1).split("inputs = processor(")[0]
    words = [f"w{index}" for index in range(20)]
    checkpoint = tmp_path / "vqa-checkpoint"
    LxmertSProcessor(wordpiece_tokenizer_from_vocabulary(words)).save_pretrained(checkpoint)
    config = tiny_config(vocab_size=len(words) + len(SPECIAL_TOKENS), num_qa_labels=3)
    LxmertSForQuestionAnswering(config).save_pretrained(checkpoint)
    namespace: dict = {}
    exec(compile(setup.replace("path/to/vqa-checkpoint", str(checkpoint)), "docs/data.md", "exec"), namespace)
    processor = namespace["processor"]
    assert (
        processor.tokenizer.get_vocab() == LxmertSProcessor.from_pretrained(checkpoint).tokenizer.get_vocab()
    )
    assert processor.image_processor is not None
