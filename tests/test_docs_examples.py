"""The Python examples of docs/clients.md, run as written against a live server (only the
service's URL changed): the client's tour and the scikit-learn `cross_val_score`, which must
leave no model behind."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from service.client import GradualClient
from service.config import Settings
from tests.live_server import ROOT, serving

DOC = ROOT / "docs" / "clients.md"
DOC_URL = "http://127.0.0.1:8000"


@pytest.fixture
def url(settings: Settings) -> Iterator[str]:
    with serving(settings) as base:
        yield base


def example(heading: str) -> str:
    """The first Python block after `heading` in docs/clients.md."""
    text = DOC.read_text()
    start = text.index(f"\n{heading}\n")
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match, f"no Python example under {heading!r}"
    return match.group(1)


def run(code: str, url: str) -> dict[str, object]:
    assert DOC_URL in code
    scope: dict[str, object] = {"__name__": "docs_example"}
    exec(compile(code.replace(DOC_URL, url), str(DOC), "exec"), scope)  # the doc's own code
    return scope


def test_the_python_client_example_runs_as_written(url: str) -> None:
    scope = run(example("### The Python client"), url)
    assert len(scope["labels"]) == 5  # type: ignore[arg-type]
    assert scope["probabilities"].shape == (5, 7)  # type: ignore[attr-defined]
    assert scope["report"].batches == 4  # type: ignore[attr-defined]
    with GradualClient(url) as gradual:
        model = gradual.get("covtype")
        kinds = [event.kind for event in gradual.events("covtype")]
    assert (model.served_version, kinds.count("rollback")) == (2, 1)


def test_the_scikit_learn_example_runs_and_leaves_no_model(url: str) -> None:
    code = example("### scikit-learn estimators").replace("epochs=5", "epochs=2")  # time
    scope = run(code, url)
    del scope
    with GradualClient(url) as gradual:
        assert gradual.list() == []  # each fold's temporary model was deleted
