"""OpenTelemetry: message -> step -> effect spans when an SDK is configured; nothing when not."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from runtime import _tracing

from .served import ROOT


def spans(db: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.tracing_child", db],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    made: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return made


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return spans(str(tmp_path_factory.mktemp("traced") / "journal.db"))


def chain(made: list[dict[str, Any]], span: dict[str, Any]) -> list[str]:
    """The names from ``span`` up to its root."""
    by_id = {s["id"]: s for s in made}
    names = [span["name"]]
    while span["parent"] in by_id:
        span = by_id[span["parent"]]
        names.append(span["name"])
    return names


def test_a_message_its_step_and_its_effects_nest_under_the_callers_span(traced: list[dict[str, Any]]) -> None:
    (lookup,) = [s for s in traced if s["name"] == "effect lookup"]
    assert chain(traced, lookup) == ["effect lookup", "step research", "message research", "POST /ask"]
    assert lookup["attributes"] == {
        "stele.actor": "Agent/ada",
        "stele.handler": "research",
        "stele.effect": "lookup",
        "stele.effect.index": 0,
        "stele.attempt": 1,
        "stele.outcome": "ok",
    }
    (step,) = [s for s in traced if s["name"] == "step research"]
    assert step["attributes"]["stele.outcome"] == "ok" and step["attributes"]["stele.attempt"] == 1
    # What the step sent is a message under the step, processed by the librarian's step.
    (filed,) = [s for s in traced if s["name"] == "step file"]
    assert chain(traced, filed)[:4] == ["step file", "message file", "step research", "message research"]
    assert filed["attributes"]["stele.actor"] == "Librarian/main"
    assert len({s["trace"] for s in traced if "POST /ask" in chain(traced, s)}) == 1


def test_each_attempt_of_a_retried_effect_is_a_span_with_its_outcome(traced: list[dict[str, Any]]) -> None:
    attempts = [s for s in traced if s["name"] == "effect flaky"]
    assert [(s["attributes"]["stele.attempt"], s["attributes"]["stele.outcome"]) for s in attempts] == [
        (1, "error"),
        (2, "error"),
        (3, "ok"),
    ]
    assert [s["status"] for s in attempts] == ["ERROR", "ERROR", "UNSET"]
    assert attempts[0]["attributes"]["stele.error.type"] == "ConnectionError"


def test_spans_the_effect_itself_opens_nest_under_the_effect(traced: list[dict[str, Any]]) -> None:
    inside = [s for s in traced if s["name"] == "inside the tool"]  # a function run in a thread
    assert len(inside) == 3 and all(chain(traced, s)[1] == "effect flaky" for s in inside)
    (model,) = [s for s in traced if s["name"] == "inside the model"]  # a coroutine
    assert chain(traced, model)[:3] == ["inside the model", "effect model", "step call"]


def test_a_handler_error_is_an_error_step(traced: list[dict[str, Any]]) -> None:
    (failed,) = [s for s in traced if s["name"] == "step fail"]
    assert failed["status"] == "ERROR" and failed["attributes"]["stele.outcome"] == "error"


def test_nothing_without_a_configured_provider() -> None:
    # This process has the API (a dev dependency) but configures no SDK: every span would be a no-op.
    assert _tracing.tracer() is None


def test_the_runtime_runs_without_opentelemetry_installed(tmp_path: Any) -> None:
    program = f"""
import sys
sys.modules["opentelemetry"] = None  # as if the optional extra were not installed
import anyio
from runtime import Runtime, _tracing
from tests.models import Account, Deposit
assert _tracing.trace is None and _tracing.tracer() is None

async def main():
    async with Runtime({str(tmp_path / "j.db")!r}, actors=[Account]) as rt:
        print(await rt.ask("Account/a", Deposit(3)))

anyio.run(main)
"""
    done = subprocess.run(
        [sys.executable, "-c", program], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "3", done.stderr
