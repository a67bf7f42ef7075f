"""Forms generated from message types: one field per field of the handler's message Struct.

The JSON Schema comes from msgspec, the library that decodes and validates the
message when it arrives, so a form cannot ask for what the handler would not
take. Strings, numbers, booleans and enums get inputs of their own; anything
else (lists, maps, nested Structs, unions) is a JSON text area. The server
validates the result exactly as ``POST /actors/...`` does.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from actors._actor import ActorDescription

from .._text import plain


class Field(msgspec.Struct, kw_only=True):
    """One input of a message form."""

    name: str
    input: str
    """``text``, ``integer``, ``number``, ``boolean``, ``choice`` or ``json``."""
    required: bool
    nullable: bool = False
    default: str = ""
    """The default as the input shows it (JSON text for ``json`` inputs)."""
    checked: bool = False
    choices: list[tuple[str, str]] = msgspec.field(default_factory=list)
    """``(label, JSON value)`` of each choice."""
    hint: str = ""


class Form(msgspec.Struct, kw_only=True):
    """The form of one handler."""

    handler: str
    message: str
    doc: str
    fields: list[Field]


def forms(desc: ActorDescription) -> list[Form]:
    """A form per handler of ``desc``, by handler name."""
    made = []
    for name, info in sorted(desc.handlers.items()):
        schema = msgspec.json.schema(info.message_type)
        made.append(
            Form(
                handler=plain(name),
                message=plain(info.message_type.__qualname__),
                doc=plain((info.fn.__doc__ or "").strip().split("\n")[0]),
                fields=fields(schema),
            )
        )
    return made


def fields(schema: dict[str, Any]) -> list[Field]:
    """The fields of a message's JSON Schema (as msgspec writes it: a ``$ref`` into ``$defs``)."""
    defs: dict[str, Any] = schema.get("$defs", {})
    body = _resolve(schema, defs)
    required = set(body.get("required", ()))
    return [_field(name, prop, name in required, defs) for name, prop in body.get("properties", {}).items()]


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target: dict[str, Any] = defs.get(ref.removeprefix("#/$defs/"), {})
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _field(name: str, prop: dict[str, Any], required: bool, defs: dict[str, Any]) -> Field:
    prop = _resolve(prop, defs)
    nullable = False
    options = prop.get("anyOf")
    if isinstance(options, list):
        kinds = [_resolve(o, defs) for o in options]
        others = [o for o in kinds if o.get("type") != "null"]
        nullable = len(others) < len(kinds)
        if len(others) == 1:
            prop = {**others[0], **{k: v for k, v in prop.items() if k != "anyOf"}}
    kind = prop.get("type")
    default = prop.get("default")
    hint = plain(prop.get("description", "") or prop.get("title", ""))
    made = Field(name=plain(name), input="json", required=required, nullable=nullable, hint=hint)
    if "enum" in prop and all(isinstance(v, str | int | float) for v in prop["enum"]):
        made.input = "choice"
        made.choices = [(plain(str(v)), json.dumps(v, ensure_ascii=False)) for v in prop["enum"]]
        made.default = json.dumps(default, ensure_ascii=False) if default is not None else ""
    elif kind == "string" and "format" not in prop:
        made.input = "text"
        made.default = plain(default) if isinstance(default, str) else ""
    elif kind == "integer":
        made.input = "integer"
        made.default = str(default) if isinstance(default, int) else ""
    elif kind == "number":
        made.input = "number"
        made.default = repr(default) if isinstance(default, int | float) else ""
    elif kind == "boolean":
        made.input = "boolean"
        made.checked = default is True
    else:
        made.default = json.dumps(default, ensure_ascii=False) if "default" in prop else ""
        made.hint = made.hint or f"JSON ({kind or 'any value'})"
    return made
