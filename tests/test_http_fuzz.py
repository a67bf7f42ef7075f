"""Fuzzing the HTTP API from its own OpenAPI description (schemathesis): no input gets a 5xx.

A real ``python -m runtime serve`` child on 127.0.0.1 with an ephemeral port; valid
and invalid requests generated from ``GET /openapi.json`` for every operation, with
a bounded number of examples, so the run stays well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .served import Server, request

EXAMPLES = 200
"""Requests per generation mode, across every operation."""


@pytest.fixture
def server(db: str) -> Iterator[Server]:
    served = Server(db, "--no-replicate", module="tests.http_models")
    yield served
    assert served.stop() == 0


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_gets_a_server_error(server: Server, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    # Waiter's asks wait for a promise nobody resolves, and a followed stream never ends:
    # not something to fuzz (tests/test_stream_http.py covers the stream's bad input).
    operations = schema.exclude(path_regex="^/actors/Waiter/|/stream$")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    seen: list[int] = []

    @given(case=operations.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Case[Any]) -> None:
        response = case.call(base_url=server.url, timeout=30)
        seen.append(response.status_code)
        case.validate_response(response, checks=checks)

    fuzz()
    assert len(seen) >= EXAMPLES // 2 and all(status < 500 for status in seen)
    assert request(f"{server.url}/health")[0] == 200  # and the server still serves


def test_the_description_is_valid_openapi(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), results
    labels = {result.ok().label for result in results if isinstance(result, Ok)}
    assert {"POST /actors/Notes/{key}/add", "POST /actors/Waiter/{key}/wait", "GET /status"} <= labels
