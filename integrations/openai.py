"""The official ``openai`` client as a journaled effect: ``pip install 'stele[openai]'``.

Inside a handler::

    answer = await complete(self.ctx, client, model="gpt-4o-mini", messages=messages, tools=tools)

    stream = stream_completion(self.ctx, client, model="gpt-4o-mini", messages=messages)
    async for part in stream:        # str tokens, ToolCallPart and Finished parts
        ...
    answer = stream.result           # the assembled Completion

Either is an effect of the step: its outcome (the :class:`Completion`, or the
error) is journaled, so after a crash the recorded answer comes back and the
model is not called again. A stream journals each part as it arrives and
readers of the actor's stream (``GET /actors/{type}/{key}/stream``) get the
tokens live; an attempt cut by a crash or a failure starts over, marked as
such. Retries are Stele's (``retry``, journaled with their backoff): the
client's own are turned off for the call, or a failure would be retried
twice over. ``timeout`` bounds a whole call (:func:`complete`) or the wait
for each part (:func:`stream_completion`).

Any OpenAI-compatible server works (vLLM, Ollama, llama.cpp): give the
client its ``base_url``. ``client`` is any ``openai.AsyncOpenAI``; it is not
journaled (nothing but the outcome is), so a replay needs no client at all.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec

# Imported at run time, not for type checkers only: the stream's part type is read from
# chat_completion_stream's annotations, which must all resolve.
from openai import AsyncOpenAI

from actors import Context, Retry, Stream

DEFAULT_RETRY = Retry(max_attempts=4, initial=1.0, max_delay=30.0)
"""Model calls fail now and then (rate limits, overloaded servers, cut connections)."""
DEFAULT_TIMEOUT_S = 120.0


class ToolCall(msgspec.Struct, frozen=True):
    """A function the model asks to call, with its arguments as the JSON text the model wrote."""

    id: str
    name: str
    arguments: str = ""

    def args(self) -> Any:
        """The arguments, decoded (``{}`` if there are none)."""
        return json.loads(self.arguments) if self.arguments.strip() else {}


class Usage(msgspec.Struct, frozen=True):
    """Tokens the call used, as the server reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Completion(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a chat completion answered (its first choice): what is journaled."""

    content: str | None = None
    tool_calls: list[ToolCall] = msgspec.field(default_factory=list)
    finish_reason: str | None = None
    model: str = ""
    usage: Usage | None = None

    def message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation, in the API's format."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return message


class ToolCallPart(msgspec.Struct, frozen=True, omit_defaults=True, tag="tool_call"):
    """A piece of tool call ``index``, as streamed: its id and name come first, its arguments in pieces."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class Finished(msgspec.Struct, frozen=True, omit_defaults=True, tag="finish"):
    """The end of a streamed answer: why it ended, and the model and usage when the server says."""

    reason: str | None = None
    model: str = ""
    usage: Usage | None = None


Part = str | ToolCallPart | Finished
"""One part of a streamed answer: a text token, a piece of a tool call, or the end."""


def tool(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """A function tool, as ``tools=[...]`` wants it (``parameters``: a JSON schema)."""
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


# -- the effects (journaled under these names) --------------------------------------------------


async def chat_completion(client: AsyncOpenAI, request: dict[str, Any]) -> Completion:
    """One chat completion, not streamed."""
    response = await client.with_options(max_retries=0).chat.completions.create(**request)
    choice = response.choices[0]
    message = choice.message
    calls = [
        ToolCall(call.id, call.function.name, call.function.arguments)
        for call in message.tool_calls or ()
        if getattr(call, "function", None) is not None
    ]
    usage = response.usage
    return Completion(
        content=message.content,
        tool_calls=calls,
        finish_reason=choice.finish_reason,
        model=response.model,
        usage=Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) if usage else None,
    )


async def chat_completion_stream(client: AsyncOpenAI, request: dict[str, Any]) -> AsyncIterator[Part]:
    """One chat completion, streamed part by part."""
    stream = await client.with_options(max_retries=0).chat.completions.create(**request, stream=True)
    reason: str | None = None
    model = ""
    usage: Usage | None = None
    async with stream:  # the HTTP response is closed however this ends (a handler that leaves early)
        async for chunk in stream:
            model = chunk.model or model
            if chunk.usage is not None:
                u = chunk.usage
                usage = Usage(u.prompt_tokens, u.completion_tokens, u.total_tokens)
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            delta = choice.delta
            if delta.content:
                yield delta.content
            for call in delta.tool_calls or ():
                function = call.function
                yield ToolCallPart(
                    call.index,
                    call.id,
                    function.name if function else None,
                    (function.arguments or "") if function else "",
                )
            reason = choice.finish_reason or reason
    yield Finished(reason, model, usage)


def assemble(parts: list[Part]) -> Completion:
    """The answer a stream's parts make (its journaled result)."""
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finished = Finished()
    for part in parts:
        if isinstance(part, str):
            text.append(part)
        elif isinstance(part, ToolCallPart):
            call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": []})
            call["id"] = part.id or call["id"]
            call["name"] = part.name or call["name"]
            call["arguments"].append(part.arguments)
        else:
            finished = part
    return Completion(
        content="".join(text) if text or not calls else None,
        tool_calls=[ToolCall(c["id"], c["name"], "".join(c["arguments"])) for _, c in sorted(calls.items())],
        finish_reason=finished.reason,
        model=finished.model,
        usage=finished.usage,
    )


# -- what handlers call ---------------------------------------------------------------------------


async def complete(
    ctx: Context,
    client: AsyncOpenAI,
    *,
    retry: Retry | None = DEFAULT_RETRY,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    **request: Any,
) -> Completion:
    """A chat completion (``request``: what ``client.chat.completions.create`` takes) as a journaled effect."""
    result: Completion = await ctx.effect(chat_completion, client, request, retry=retry, timeout=timeout)
    return result


def stream_completion(
    ctx: Context,
    client: AsyncOpenAI,
    *,
    retry: Retry | None = DEFAULT_RETRY,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    **request: Any,
) -> Stream[Part]:
    """A streamed chat completion as a journaled stream; ``.result`` is the assembled :class:`Completion`."""
    return ctx.stream(chat_completion_stream, client, request, retry=retry, timeout=timeout, assemble=assemble)
