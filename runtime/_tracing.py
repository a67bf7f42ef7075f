"""Steps and effects as OpenTelemetry spans, so Stele shows up in the tracing users already run.

A message is a span from the moment it is accepted to the end of the step
that processes it, child of whatever was current when it was sent (an HTTP
request's span, or the sending actor's step); its step is a span under it
(handler, attempt, outcome), and each attempt of each effect a span under the
step (effect name, attempt, outcome), current while the effect runs, so the
spans of an instrumented LLM or HTTP client called in it nest below.

Only through the OpenTelemetry API, and only when it is installed and a
tracer provider is configured (an SDK, an auto-instrumentation): otherwise
:func:`tracer` returns None when the runtime opens and the engine's hooks are
a test of one attribute.
"""

from __future__ import annotations

import contextvars
import functools
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
except ImportError:  # the optional extra (stele[otel]) is not installed
    trace = None  # type: ignore[assignment]
    otel_context = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ._cell import Cell, Msg
    from ._records import EffectRecord


class Step(Protocol):
    """What a span needs of a step (``runtime._step.Step``)."""

    msg: Msg
    cell: Cell


INSTRUMENTATION = "stele"
MAX_PENDING = 100_000
"""Messages sent and not yet processed whose span is kept; beyond, the oldest are ended unprocessed."""


def tracer() -> Tracing | None:
    """A :class:`Tracing` when OpenTelemetry is installed and a tracer provider is configured, else None."""
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None  # the API alone: every span would be a no-op
    return Tracing(provider.get_tracer(INSTRUMENTATION))


class Tracing:
    """The spans of messages under way, their steps and their effects."""

    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer
        self._messages: OrderedDict[int, Any] = OrderedDict()
        """Message id -> its span, from acceptance to the end of its step."""
        self._steps: dict[str, Any] = {}
        """Address -> the span of its running step (the parent of what it sends)."""

    # -- messages ---------------------------------------------------------------------

    def sent(self, msg: Msg, address: str) -> None:
        """``msg`` for ``address`` was accepted: its span starts, under the sender's step or what is current."""
        parent = None
        if msg.sender is not None:
            step = self._steps.get(msg.sender)
            if step is not None:
                parent = trace.set_span_in_context(step)
        span = self._tracer.start_span(
            f"message {msg.handler.name}",
            context=parent,
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "stele.actor": address,
                "stele.handler": msg.handler.name,
                "stele.message.id": msg.step,
                "stele.message.type": msg.type_name,
                **({"stele.sender": msg.sender} if msg.sender else {}),
            },
        )
        self._messages[msg.step] = span
        while len(self._messages) > MAX_PENDING:
            _, oldest = self._messages.popitem(last=False)
            oldest.end()

    # -- steps ------------------------------------------------------------------------

    def begins(self, step: Step) -> None:
        """``step`` starts (its message's span is found, or started for a message from before a restart)."""
        msg, address = step.msg, step.cell.address
        message = self._messages.get(msg.step)
        if message is None:
            message = self._tracer.start_span(
                f"message {msg.handler.name}",
                kind=trace.SpanKind.PRODUCER,
                attributes={"stele.actor": address, "stele.handler": msg.handler.name, "stele.message.id": msg.step},
            )
            self._messages[msg.step] = message
        span = self._tracer.start_span(
            f"step {msg.handler.name}",
            context=trace.set_span_in_context(message),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "stele.actor": address,
                "stele.handler": msg.handler.name,
                "stele.message.id": msg.step,
                "stele.attempt": msg.attempts + 1,
            },
        )
        self._steps[address] = span

    def ends(self, step: Step, outcome: str, error: BaseException | None = None) -> None:
        """``step`` is over: ``ok``, ``error`` (its handler raised), ``suspended``, ``failed`` (not journaled;
        retried) or ``broken``. Its message's span ends with it, unless it is retried."""
        span = self._steps.pop(step.cell.address, None)
        if span is None:
            return
        span.set_attribute("stele.outcome", outcome)
        if error is not None and outcome != "ok":
            span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__qualname__}: {error}"[:500]))
        span.end()
        if outcome != "failed":
            message = self._messages.pop(step.msg.step, None)
            if message is not None:
                message.set_attribute("stele.outcome", outcome)
                message.end()

    # -- effects ----------------------------------------------------------------------

    def effect(self, step: Step, name: str, index: int, attempt: int) -> Any:
        """An attempt of an effect starts: its span, under its step's."""
        parent = self._steps.get(step.cell.address)
        return self._tracer.start_span(
            f"effect {name}",
            context=trace.set_span_in_context(parent) if parent is not None else None,
            kind=trace.SpanKind.CLIENT,
            attributes={
                "stele.actor": step.cell.address,
                "stele.handler": step.msg.handler.name,
                "stele.effect": name,
                "stele.effect.index": index,
                "stele.attempt": attempt,
            },
        )

    @staticmethod
    def effect_done(span: Any, record: EffectRecord) -> None:
        """The attempt's outcome, as journaled."""
        span.set_attribute("stele.outcome", "ok" if record.ok else "error")
        if not record.ok:
            span.set_attribute("stele.error.type", record.error_type)
            span.set_status(trace.Status(trace.StatusCode.ERROR, f"{record.error_type}: {record.error}"[:500]))
        span.end()

    @staticmethod
    def within(span: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` (a plain callable, run in a thread) with ``span`` current while it runs."""
        made = contextvars.copy_context()
        made.run(otel_context.attach, trace.set_span_in_context(span))
        return functools.partial(made.run, fn)

    @staticmethod
    def task_within(span: Any, coro: Coroutine[Any, Any, Any]) -> Any:
        """``coro`` as a task in a context where ``span`` is current (awaited, and cancelled, as the coroutine)."""
        import asyncio  # noqa: PLC0415 - only with tracing on

        made = contextvars.copy_context()
        made.run(otel_context.attach, trace.set_span_in_context(span))
        return asyncio.get_running_loop().create_task(coro, context=made)
