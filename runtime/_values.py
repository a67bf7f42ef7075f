"""What the journal can store: checks at the doors, and text made storable.

A value the codec or SQLite cannot store must fail the one call that brought
it, with an error that names it, before anything is accepted; once inside (a
handler's reply, an effect's result, an exception's message), it fails only
its own step. See :class:`actors.UnstorableValueError` for the limits.
"""

from __future__ import annotations

import math

import msgspec

from actors import UnstorableValueError

INT64 = (-(2**63), 2**63 - 1)
"""What SQLite's INTEGER holds."""

ENCODE_ERRORS = (TypeError, ValueError, OverflowError, msgspec.EncodeError)
"""What msgspec's and APSW's encoders raise for a value they cannot store
(``UnicodeEncodeError`` is a ``ValueError``)."""


def text(value: str, what: str) -> str:
    """``value`` if it can be stored as text, else :class:`UnstorableValueError` naming ``what``."""
    if not isinstance(value, str):
        raise UnstorableValueError(f"{what} must be a str, not {type(value).__qualname__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnstorableValueError(
            f"{what} {storable(value)!r} cannot be stored: it holds a lone surrogate at position {exc.start} "
            "(not UTF-8)"
        ) from None
    return value


def scalar(value: str | int | float | None, what: str) -> str | int | float | None:
    """A value for an SQLite column (meta), checked: text as :func:`text`, ints within 64 bits."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return text(value, what)
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise UnstorableValueError(f"{what} {value} cannot be stored: SQLite integers hold 64 bits")
        return value
    if isinstance(value, float):
        return value
    raise UnstorableValueError(f"{what} must be a str, int, float or None, not {type(value).__qualname__}")


def finite(value: float, what: str) -> float:
    """``value`` if it is a finite number (a due time, a delay)."""
    if not math.isfinite(value):
        raise UnstorableValueError(f"{what} must be a finite number, not {value!r}")
    return value


def storable(value: str) -> str:
    """``value`` with anything that has no UTF-8 form escaped (``\\udc80``): error texts, reasons."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")
