"""The OpenAI integration: the real ``openai`` client against a scripted OpenAI-compatible
server on 127.0.0.1 (the wire format, SSE streaming and tool calls included), its answers
journaled, retried, timed out, replayed, and never asked again after a crash."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import msgspec
import pytest
from openai import AsyncOpenAI

from actors import Actor, EffectError, Retry, handler
from examples.openai_agent import Assistant, Question, search
from integrations.openai import Completion, Finished, ToolCallPart, complete, stream_completion
from runtime import Registry, Runtime, replay
from storage import EntryKind, Journal

from .openai_server import OpenAIServer, Reply

QUICK = Retry(max_attempts=3, initial=0.01, jitter=0)


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        yield server


class Ask(msgspec.Struct):
    text: str
    stream: bool = False
    timeout: float = 30.0


class Hold(msgspec.Struct):
    """Stream an answer, then wait in another effect."""

    text: str


class Gate:
    open = anyio.Event()
    entered = 0


async def gate() -> str:
    Gate.entered += 1
    await Gate.open.wait()
    return "through"


def client() -> AsyncOpenAI:
    from examples.openai_agent import model_client

    return model_client()


class Chat(Actor):
    """One model call, streamed or not; ``wait`` then waits in another effect."""

    @handler
    async def ask(self, msg: Ask) -> dict[str, Any]:
        messages = [{"role": "user", "content": msg.text}]
        if msg.stream:
            stream = stream_completion(
                self.ctx, client(), model="m", messages=messages, retry=QUICK, timeout=msg.timeout
            )
            parts = [part async for part in stream]
            answer: Completion = stream.result
            tokens = [p for p in parts if isinstance(p, str)]
        else:
            answer = await complete(self.ctx, client(), model="m", messages=messages, retry=QUICK, timeout=msg.timeout)
            tokens = []
        return {"answer": msgspec.to_builtins(answer), "tokens": tokens}

    @handler
    async def wait(self, msg: Hold) -> str:
        stream = stream_completion(self.ctx, client(), model="m", messages=[{"role": "user", "content": msg.text}])
        async for _ in stream:
            pass
        return f"{stream.result.content}|{await self.ctx.effect(gate)}"


async def test_a_completion_is_one_journaled_effect_and_replays_without_the_model(db: str, model: OpenAIServer) -> None:
    model.add(Reply("Durable actors keep their state in a journal."))
    async with Runtime(db, actors=[Chat]) as rt:
        reply = await rt.ask("Chat/a", Ask("what is a durable actor?"))
    assert reply["answer"] == {
        "content": "Durable actors keep their state in a journal.",
        "finish_reason": "stop",
        "model": "scripted-1",
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
    assert model.calls() == 1 and model.requests[0]["messages"] == [
        {"role": "user", "content": "what is a durable actor?"}
    ]
    with Journal.open(db) as journal:
        effects = list(journal.entries("Chat/a", kind=EntryKind.EFFECT))
        assert [e.type for e in effects] == ["chat_completion"]
        assert replay(journal, Registry([Chat])).ok
    assert model.calls() == 1


async def test_a_streamed_completion_journals_each_token_and_assembles_the_answer(db: str, model: OpenAIServer) -> None:
    model.add(Reply("one two three four"))
    async with Runtime(db, actors=[Chat]) as rt:
        reply = await rt.ask("Chat/a", Ask("count", stream=True))
        items = [i async for i in rt.stream("Chat/a", follow=False)]
    assert reply["tokens"] == ["one", " two", " three", " four"]
    assert reply["answer"]["content"] == "one two three four" and reply["answer"]["finish_reason"] == "stop"
    assert [i.kind for i in items] == ["start", "chunk", "chunk", "chunk", "chunk", "chunk", "end"]
    assert [i.value for i in items[1:5]] == reply["tokens"]
    assert items[5].value == {"type": "finish", "reason": "stop", "model": "scripted-1"}
    assert items[-1].value["content"] == "one two three four" and items[-1].effect == "chat_completion_stream"
    assert model.requests[0]["stream"] is True
    with Journal.open(db) as journal:
        assert replay(journal, Registry([Chat])).ok
    assert model.calls() == 1


async def test_streamed_tool_calls_come_in_pieces_and_assemble_whole(db: str, model: OpenAIServer) -> None:
    arguments = json.dumps({"query": "durable execution for agents", "limit": 3})
    model.add(Reply(tool_calls=[("call_1", "search", arguments), ("call_2", "search", '{"query": "journal"}')]))
    async with Runtime(db, actors=[Chat]) as rt:
        reply = await rt.ask("Chat/a", Ask("find", stream=True))
    assert reply["answer"]["tool_calls"] == [
        {"id": "call_1", "name": "search", "arguments": arguments},
        {"id": "call_2", "name": "search", "arguments": '{"query": "journal"}'},
    ]
    assert reply["answer"]["finish_reason"] == "tool_calls" and reply["answer"].get("content") is None
    assert reply["tokens"] == []


async def test_the_example_agent_runs_its_tool_calling_loop_and_a_replay_calls_nothing(
    db: str, model: OpenAIServer
) -> None:
    model.add(
        Reply(tool_calls=[("call_1", "search", '{"query": "durable actors"}')]),
        Reply("Durable actors journal every step; see the sources."),
    )
    async with Runtime(db, actors=[Assistant]) as rt:
        answer = await rt.ask("Assistant/ada", Question("what are durable actors?"))
        items = [i async for i in rt.stream("Assistant/ada", follow=False)]
    assert answer == "Durable actors journal every step; see the sources."
    assert model.calls() == 2
    second = model.requests[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "tool"]
    assert second[1]["tool_calls"][0]["function"] == {"name": "search", "arguments": '{"query": "durable actors"}'}
    assert second[2] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": json.dumps(search("durable actors"), separators=(",", ":")),
    }
    assert model.requests[0]["tools"][0]["function"]["name"] == "search"
    assert [i.kind for i in items if i.kind != "chunk"] == ["start", "end", "start", "end"]  # two model calls
    with Journal.open(db) as journal:
        assert replay(journal, Registry([Assistant])).ok
        kinds = [e.type for e in journal.entries("Assistant/ada", kind=EntryKind.EFFECT)]
    assert kinds == ["stream:chat_completion_stream", "run_tool", "stream:chat_completion_stream"]
    assert model.calls() == 2


async def test_after_a_crash_the_recorded_answer_comes_back_and_the_model_is_not_called_again(
    db: str, model: OpenAIServer
) -> None:
    model.add(Reply("recorded answer"))
    Gate.open, Gate.entered = anyio.Event(), 0
    rt = await Runtime(db, actors=[Chat]).__aenter__()
    await rt.tell("Chat/a", Hold("q"))
    with anyio.fail_after(30):
        while Gate.entered == 0:
            await anyio.sleep(0.01)
    await rt.abandon()  # a crash while the step waits in its next effect
    assert model.calls() == 1
    async with Runtime(db, actors=[Chat]) as rt:
        Gate.open.set()
        with anyio.fail_after(30):
            while rt.statistics().pending:
                await anyio.sleep(0.01)
    assert model.calls() == 1  # the recorded answer came back
    with Journal.open(db) as journal:
        replies = [e.decoded() for e in journal.entries("Chat/a", kind=EntryKind.REPLY)]
    assert replies == [{"ok": True, "value": "recorded answer|through"}]


async def test_a_failed_call_is_retried_with_its_attempt_journaled(db: str, model: OpenAIServer) -> None:
    model.add(Reply(status=500), Reply(status=429), Reply("third time"))
    async with Runtime(db, actors=[Chat]) as rt:
        reply = await rt.ask("Chat/a", Ask("q"))
    assert reply["answer"]["content"] == "third time" and model.calls() == 3  # the client's own retries are off
    with Journal.open(db) as journal:
        attempts = [e.decoded() for e in journal.entries("Chat/a", kind=EntryKind.ATTEMPT)]
    assert [a["error_type"] for a in attempts] == ["InternalServerError", "RateLimitError"]


async def test_a_call_that_keeps_failing_raises_its_error_to_the_handler(db: str, model: OpenAIServer) -> None:
    class Failing(Actor):
        @handler
        async def ask(self, msg: Ask) -> str:
            try:
                await complete(self.ctx, client(), model="m", messages=[], retry=QUICK)
            except EffectError as exc:
                return f"{exc.type_name}: {exc.message}"
            return "answered"

    model.add(*[Reply(status=503)] * 3)
    async with Runtime(db, actors=[Failing]) as rt:
        assert (await rt.ask("Failing/a", Ask("q"))).startswith("InternalServerError: Error code: 503")
    assert model.calls() == 3


async def test_a_stream_cut_mid_answer_starts_over_marked_and_the_handler_sees_one_answer(
    db: str, model: OpenAIServer
) -> None:
    model.add(Reply("alpha beta gamma delta", cut_after=3), Reply("alpha beta gamma delta"))
    async with Runtime(db, actors=[Chat]) as rt:
        reply = await rt.ask("Chat/a", Ask("q", stream=True))
        items = [i async for i in rt.stream("Chat/a", follow=False)]
    assert reply["tokens"] == ["alpha", " beta", " gamma", " delta"] and model.calls() == 2
    kinds = [(i.kind, i.attempt) for i in items]
    assert kinds[:4] == [("start", 1), ("chunk", 1), ("chunk", 1), ("failed", 1)]  # the role chunk has no text
    assert kinds[4] == ("restart", 2) and kinds[-1] == ("end", 2)
    assert [i.value for i in items if i.kind == "chunk" and i.attempt == 2][:4] == reply["tokens"]
    with Journal.open(db) as journal:
        assert replay(journal, Registry([Chat])).ok


async def test_a_stream_that_stalls_times_out_and_is_retried(db: str, model: OpenAIServer) -> None:
    model.add(Reply("slow answer", stall_after=2), Reply("quick answer"))
    async with Runtime(db, actors=[Chat]) as rt:
        with anyio.fail_after(60):
            reply = await rt.ask("Chat/a", Ask("q", stream=True, timeout=0.5))
        items = [i async for i in rt.stream("Chat/a", follow=False)]
    assert reply["answer"]["content"] == "quick answer" and model.calls() == 2
    failed = [i for i in items if i.kind == "failed"]
    assert [(f.attempt, f.error_type) for f in failed] == [(1, "TimeoutError")]


def test_parts_and_answers_keep_their_shape_through_the_journal() -> None:
    parts: list[Any] = [
        "a",
        ToolCallPart(0, "c1", "search", '{"q"'),
        ToolCallPart(0, None, None, ': "x"}'),
        Finished("tool_calls"),
    ]
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(parts), type=list[str | ToolCallPart | Finished])
    assert decoded == parts
