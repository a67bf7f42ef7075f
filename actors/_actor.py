"""``Actor``, ``@handler`` and ``@apply``: what users write."""

from __future__ import annotations

import datetime
import inspect
import math
import typing
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import msgspec

from ._context import Context
from ._errors import ActorDefinitionError, SteleError

F = TypeVar("F", bound=Callable[..., Any])

_HANDLER = "__stele_handler__"
_APPLY = "__stele_apply__"


def handler(fn: F) -> F:
    """Mark an ``async`` method as a message handler.

    It takes one message, whose type comes from the annotation, and returns the
    reply (anything msgspec can encode, or ``None``).
    """
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"@handler {fn.__qualname__} must be an async method")
    setattr(fn, _HANDLER, True)
    return fn


def apply(fn: F) -> F:
    """Mark a synchronous, pure method as the applier of one event type.

    Appliers are the only code that changes ``self.state``; they run when an
    event is emitted and again whenever state is rebuilt from the journal.
    """
    if inspect.iscoroutinefunction(fn):
        raise TypeError(f"@apply {fn.__qualname__} must be synchronous")
    setattr(fn, _APPLY, True)
    return fn


@dataclass(frozen=True)
class Retention:
    """How much of an actor type's history to keep; the rest may be compacted away.

    ``snapshots``: keep the history from the ``snapshots``-th newest snapshot on.
    ``age`` (seconds, or a ``timedelta``): keep everything younger than that.
    With both, what either keeps is kept. History is only ever removed when a
    kept snapshot covers it: every position from the oldest kept snapshot on
    stays exact for ``state --at`` and forkable; an older one is answered with
    ``OutsideRetentionError``. Compaction runs with ``rt.compact()``,
    ``python -m runtime compact`` or ``serve --compact-every``.
    """

    snapshots: int | None = None
    age: float | datetime.timedelta | None = None

    def __post_init__(self) -> None:
        if self.snapshots is None and self.age is None:
            raise ActorDefinitionError("Retention(...) needs snapshots=N, age=SECONDS, or both")
        if self.snapshots is not None and (not isinstance(self.snapshots, int) or self.snapshots < 1):
            raise ActorDefinitionError(f"Retention(snapshots=...) must be an int of at least 1, not {self.snapshots!r}")
        if self.age is not None:
            try:
                seconds = self.age_s
            except (TypeError, ValueError):
                raise ActorDefinitionError(
                    f"Retention(age=...) must be seconds or a timedelta, not {self.age!r}"
                ) from None
            if seconds is None or not (math.isfinite(seconds) and seconds > 0):
                raise ActorDefinitionError(f"Retention(age=...) must be more than 0 s, not {self.age!r}")

    @property
    def age_s(self) -> float | None:
        """``age`` in seconds (None when not given)."""
        if self.age is None:
            return None
        if isinstance(self.age, datetime.timedelta):
            return self.age.total_seconds()
        if isinstance(self.age, bool) or not isinstance(self.age, int | float):
            raise TypeError(f"not seconds: {self.age!r}")
        return float(self.age)


class Actor:
    """Base class of every actor.

    Subclasses define a nested ``State(msgspec.Struct)`` whose fields all have
    defaults, ``@handler`` methods and ``@apply`` methods. The actor type name
    is the class's own ``name`` attribute if it sets one, else its class name.
    For typed access under mypy, declare ``state: State`` in the subclass.
    """

    class State(msgspec.Struct):
        """The actor's state; subclasses replace it."""

    snapshot_every: ClassVar[int] = 1000
    """Events between snapshots; 0 disables snapshots altogether."""

    retention: ClassVar[Retention | None] = None
    """How much history to keep (:class:`Retention`); None keeps it all."""

    key: str
    address: str
    state: Any
    ctx: Context

    def __init__(self, key: str, state: Any) -> None:
        self.key = key
        self.address = f"{actor_type_name(type(self))}/{key}"
        self.state = state

    def emit(self, event: msgspec.Struct) -> None:
        """Record ``event`` in this step and apply it to ``self.state`` at once."""
        ctx = self.__dict__.get("ctx")
        if ctx is None:
            raise SteleError(f"{self.address}: emit() is only allowed inside a handler")
        ctx.emit(event)


@dataclass(frozen=True)
class HandlerInfo:
    """One ``@handler`` method as the runtime sees it."""

    name: str
    fn: Callable[[Any, Any], Coroutine[Any, Any, Any]]
    message_type: type[msgspec.Struct]
    reply_type: Any


@dataclass(frozen=True)
class ActorDescription:
    """Everything the runtime needs to know about an actor class."""

    cls: type[Actor]
    type_name: str
    state_type: type[msgspec.Struct]
    handlers: dict[str, HandlerInfo]
    by_message: dict[type, HandlerInfo]
    appliers: dict[type, Callable[[Any, Any], None]]


def actor_type_name(cls: type[Actor]) -> str:
    """The actor type name used in addresses: the class's own ``name``, else its name."""
    own = cls.__dict__.get("name")
    return own if isinstance(own, str) and own else cls.__name__


_described: dict[type, ActorDescription] = {}


def describe(cls: type[Actor]) -> ActorDescription:
    """Read and check an actor class once; cached.

    Type hints are resolved here rather than at class creation, so that
    ``from __future__ import annotations`` and forward references work.
    """
    cached = _described.get(cls)
    if cached is not None:
        return cached
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise ActorDefinitionError(f"{cls!r} is not an Actor subclass")
    state_type = cls.State
    if not (isinstance(state_type, type) and issubclass(state_type, msgspec.Struct)):
        raise ActorDefinitionError(f"{cls.__qualname__}.State must be a msgspec.Struct")
    try:
        state_type()
    except TypeError as exc:
        raise ActorDefinitionError(f"{cls.__qualname__}.State: every field needs a default ({exc})") from None
    retention = cls.retention
    if retention is not None:
        if not isinstance(retention, Retention):
            raise ActorDefinitionError(f"{cls.__qualname__}.retention must be a Retention(...), not {retention!r}")
        if cls.snapshot_every <= 0:
            raise ActorDefinitionError(
                f"{cls.__qualname__}: a retention keeps history from a snapshot on, and snapshot_every=0 takes none"
            )
    handlers: dict[str, HandlerInfo] = {}
    by_message: dict[type, HandlerInfo] = {}
    appliers: dict[type, Callable[[Any, Any], None]] = {}
    seen: set[str] = set()
    # Walk the MRO from the subclass up, so overrides win and inherited
    # handlers and appliers are still found.
    for klass in cls.__mro__:
        for attr, fn in vars(klass).items():
            if attr in seen or not callable(fn):
                continue
            if getattr(fn, _HANDLER, False):
                seen.add(attr)
                msg_type, reply_type = _signature(cls, fn, "@handler")
                info = HandlerInfo(attr, fn, msg_type, reply_type)
                if msg_type in by_message:
                    raise ActorDefinitionError(
                        f"{cls.__qualname__}: handlers {by_message[msg_type].name!r} and "
                        f"{attr!r} both take {msg_type.__qualname__}"
                    )
                handlers[attr] = info
                by_message[msg_type] = info
            elif getattr(fn, _APPLY, False):
                seen.add(attr)
                event_type, _ = _signature(cls, fn, "@apply")
                if event_type in appliers:
                    raise ActorDefinitionError(f"{cls.__qualname__}: two @apply methods take {event_type.__qualname__}")
                appliers[event_type] = fn
    description = ActorDescription(
        cls=cls,
        type_name=actor_type_name(cls),
        state_type=state_type,
        handlers=handlers,
        by_message=by_message,
        appliers=appliers,
    )
    _described[cls] = description
    return description


def _signature(cls: type, fn: Callable[..., Any], what: str) -> tuple[type[msgspec.Struct], Any]:
    """The one parameter's type (a Struct) and the return annotation of ``fn``."""
    where = f"{what} {cls.__qualname__}.{fn.__name__}"
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # NameError and friends from unresolvable annotations
        raise ActorDefinitionError(f"{where}: cannot resolve its annotations ({exc})") from None
    params = [p for p in inspect.signature(fn).parameters.values()][1:]
    if len(params) != 1:
        raise ActorDefinitionError(f"{where} must take exactly one argument after self")
    arg_type = hints.get(params[0].name)
    if not (isinstance(arg_type, type) and issubclass(arg_type, msgspec.Struct)):
        raise ActorDefinitionError(f"{where}: its argument must be annotated with a msgspec.Struct type")
    return arg_type, hints.get("return", Any)
