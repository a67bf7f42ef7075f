"""Printing text that came from a journal, a server or a user, safely.

Journal content is data: printed through rich's markup it can crash the
command (``[/x]`` is a closing tag) or restyle the output, and printed raw its
escape sequences reach the terminal (``\\x1b]0;title\\x07`` retitles the
window, ``\\x1b[2J`` clears it; bidirectional overrides reorder what is shown).
So the consoles here never interpret markup or emoji codes, and every
character Python does not consider printable is shown escaped, the way
``repr`` shows it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.text import Text

console = Console(highlight=False, markup=False, emoji=False)
err = Console(stderr=True, highlight=False, markup=False, emoji=False)

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def plain(value: object) -> str:
    """``value`` as one line of visible text: control and other unprintable characters escaped."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Rich text from plain strings (escaped) and ``(text, style)`` pairs (our own, trusted words)."""
    out = Text()
    for part in parts:
        if isinstance(part, tuple):
            out.append(part[0], style=part[1])
        else:
            out.append(plain(part))
    return out


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_line(value: Any, *, indent: int | None = None) -> str:
    """``value`` as JSON, readable Unicode kept, every unprintable character as a ``\\u`` escape.

    Outside strings json.dumps writes only printable characters (and the
    newlines of ``indent``), so escaping what is unprintable inside them keeps
    the JSON valid and the same value.
    """
    text = json.dumps(value, default=str, ensure_ascii=False, indent=indent)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == "\n" else _json_escape(ch) for ch in text)


def write_json(value: Any, *, indent: int | None = None) -> None:
    """Print ``value`` as JSON on stdout (see :func:`json_line`)."""
    sys.stdout.write(json_line(value, indent=indent) + "\n")
    sys.stdout.flush()
