"""An agent with a tool-calling loop over the official OpenAI client, every model call journaled.

Each turn streams the model's answer (readers of the actor's stream get the
tokens live); when the model asks for a tool, the tool runs as an effect and
its result goes back to the model, until it answers in words. A crash at any
point resumes the turn: answers already journaled come back from the journal,
and the model is called again only for what it had not answered yet.

    pip install 'stele[openai]'
    OPENAI_API_KEY=... python examples/openai_agent.py "what is a durable actor?" [JOURNAL]

Any OpenAI-compatible server works: set ``OPENAI_BASE_URL`` (vLLM, Ollama,
llama.cpp) and ``STELE_MODEL``. While it runs, ``python -m runtime stream
Assistant/ada --db JOURNAL --follow`` shows the tokens as they are journaled.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from typing import Any

import anyio
import msgspec
from openai import AsyncOpenAI

from actors import Actor, apply, handler
from integrations.openai import Completion, stream_completion, tool
from runtime import Runtime

MODEL = os.environ.get("STELE_MODEL", "gpt-4o-mini")
MAX_TURNS = 6
"""Model calls per question at most: a model that keeps asking for tools is stopped."""
TOOLS = [
    tool(
        "search",
        "Search the web; returns the addresses of matching pages.",
        {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    )
]


@functools.cache
def _client(base_url: str | None, key: str | None) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=base_url, api_key=key or "none")


def model_client() -> AsyncOpenAI:
    """The client, made once per server and key (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``)."""
    return _client(os.environ.get("OPENAI_BASE_URL"), os.environ.get("OPENAI_API_KEY"))


def search(query: str) -> list[str]:
    """The search tool (here: offline and deterministic)."""
    digest = hashlib.sha256(query.encode()).hexdigest()
    return [f"https://example.org/{digest[i : i + 8]}" for i in (0, 8)]


def run_tool(name: str, arguments: str) -> str:
    """Run the tool the model asked for; what it returns (or why it could not) goes back to the model."""
    try:
        args = msgspec.json.decode(arguments or "{}")
        if name == "search":
            return msgspec.json.encode(search(str(args["query"]))).decode()
        return f"error: no tool {name!r}"
    except (msgspec.DecodeError, KeyError, TypeError) as exc:
        return f"error: bad arguments for {name}: {exc}"


class Question(msgspec.Struct):
    """A question for the assistant."""

    text: str


class Said(msgspec.Struct):
    """The messages one question added to the conversation."""

    messages: list[dict[str, Any]]


class Assistant(Actor):
    """Answers questions with the model and its tools, remembering the conversation."""

    class State(msgspec.Struct):
        """The conversation so far."""

        messages: list[dict[str, Any]] = msgspec.field(default_factory=list)

    state: State

    @handler
    async def ask(self, msg: Question) -> str:
        """Answer ``msg``: model turns and tool calls until the model answers in words."""
        messages = [*self.state.messages, {"role": "user", "content": msg.text}]
        answer = Completion()
        for _ in range(MAX_TURNS):
            stream = stream_completion(self.ctx, model_client(), model=MODEL, messages=messages, tools=TOOLS)
            async for _ in stream:  # the tokens reach the actor's stream as they are journaled
                pass
            answer = stream.result
            messages.append(answer.message())
            if not answer.tool_calls:
                break
            for call in answer.tool_calls:
                result = await self.ctx.effect(run_tool, call.name, call.arguments)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        self.emit(Said(messages[len(self.state.messages) :]))
        return answer.content or ""

    @apply
    def _said(self, ev: Said) -> None:
        self.state.messages.extend(ev.messages)


async def main(question: str, path: str) -> None:
    async with Runtime(path, actors=[Assistant]) as rt:
        print(await rt.ask("Assistant/ada", Question(question)))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "what is a durable actor?",
              sys.argv[2] if len(sys.argv) > 2 else "stele-openai.db")  # fmt: skip
