"""A process that configures OpenTelemetry as a user would (the SDK, an in-memory exporter),
runs agents under a request's span, and prints every finished span as JSON."""

from __future__ import annotations

import contextlib
import json
import sys

import anyio
import msgspec
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from actors import Actor, HandlerError, Retry, handler
from runtime import Runtime

from .console_agents import ACTORS, Fail, Research

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
user = trace.get_tracer("the-users-app")
FLAKY: list[int] = []


def flaky() -> str:
    """Fails twice, then works; its own instrumentation opens a span inside."""
    with user.start_as_current_span("inside the tool"):
        FLAKY.append(1)
        if len(FLAKY) < 3:
            raise ConnectionError(f"try {len(FLAKY)} failed")
        return "third time"


async def model() -> str:
    with user.start_as_current_span("inside the model"):
        await anyio.sleep(0)
        return "an answer"


class Flaky(msgspec.Struct):
    pass


class Caller(Actor):
    @handler
    async def call(self, msg: Flaky) -> str:
        made: str = await self.ctx.effect(flaky, retry=Retry(max_attempts=3, initial=0.001))
        said: str = await self.ctx.effect(model)
        return made + ", " + said


async def main(db: str) -> None:
    async with Runtime(db, actors=[*ACTORS, Caller]) as rt:
        with user.start_as_current_span("POST /ask"):
            await rt.ask("Agent/ada", Research("traced?"))
        await rt.ask("Caller/c", Flaky())
        with contextlib.suppress(HandlerError):
            await rt.ask("Agent/ada", Fail("on purpose"))
        with anyio.fail_after(10):  # the librarian's step, told by ada's, ends after the ask returns
            while not any(s.name == "step file" for s in exporter.get_finished_spans()):
                await anyio.sleep(0.01)


anyio.run(main, sys.argv[1])
out = []
for span in exporter.get_finished_spans():
    out.append(
        {
            "name": span.name,
            "id": span.context.span_id,
            "trace": span.context.trace_id,
            "parent": span.parent.span_id if span.parent is not None else None,
            "attributes": dict(span.attributes or {}),
            "status": span.status.status_code.name,
        }
    )
print(json.dumps(out))
