"""An op's params JSON Schema, read from its function's signature.

The first parameter is the task handle and is skipped; each other one
becomes a property: `str`, `int`, `float`, `bool`, `list[X]`, `dict` /
`dict[str, X]`, `Optional[X]` / `X | None`, `Literal[...]`, `Any` (or no
hint: any JSON). A parameter with a default is optional (the default is
shown in the schema when it is JSON); `**kwargs` allows other properties,
otherwise `additionalProperties` is `false`. Anything else is a `TypeError`
at decoration time that says to pass `schema=` instead.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin

__all__ = ["params_schema"]

_SCALARS: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _literal(values: tuple[Any, ...], where: str) -> dict[str, Any]:
    kinds = set()
    for value in values:
        if value is None:
            kinds.add("null")
        elif type(value) in _SCALARS:
            kinds.add(_SCALARS[type(value)])
        else:
            raise TypeError(f"{where}: Literal values must be str, int, float, bool or None")
    schema: dict[str, Any] = {"enum": list(values)}
    if len(kinds) == 1:
        schema["type"] = kinds.pop()
    return schema


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str) and "enum" not in schema:
        return {**schema, "type": [kind, "null"]}
    if "enum" in schema:
        values = list(schema["enum"])
        if None not in values:
            values.append(None)
        out = {key: value for key, value in schema.items() if key != "type"}
        out["enum"] = values
        return out
    if not schema:
        return schema
    return {"anyOf": [schema, {"type": "null"}]}


def hint_schema(hint: Any, where: str) -> dict[str, Any]:
    """The JSON Schema for one type hint (`where` names it in errors)."""
    if hint is Any or hint is inspect.Parameter.empty or hint is object:
        return {}
    if hint is None or hint is type(None):
        return {"type": "null"}
    if isinstance(hint, type) and hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is Literal:
        return _literal(args, where)
    if origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        members = [arg for arg in args if arg is not type(None)]
        if len(members) == 1:
            inner = hint_schema(members[0], where)
            return _nullable(inner) if len(members) < len(args) else inner
        schemas = [hint_schema(member, where) for member in members]
        if len(members) < len(args):
            schemas.append({"type": "null"})
        return {"anyOf": schemas}
    if hint is list or origin is list:
        schema: dict[str, Any] = {"type": "array"}
        if args:
            items = hint_schema(args[0], where)
            if items:
                schema["items"] = items
        return schema
    if hint is dict or origin is dict:
        schema = {"type": "object"}
        if args:
            if args[0] is not str:
                raise TypeError(f"{where}: JSON objects have string keys (dict[str, …])")
            values = hint_schema(args[1], where)
            if values:
                schema["additionalProperties"] = values
        return schema
    raise TypeError(
        f"{where}: cannot make a JSON Schema from the hint {hint!r}; use str, int, float, "
        "bool, list[...], dict[str, ...], Optional/X | None, Literal[...] or Any, "
        "or give the op's schema= explicitly"
    )


def _json_default(value: Any) -> tuple[bool, Any]:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False, None
    return True, value


def params_schema(function: Callable[..., Any], op_name: str) -> dict[str, Any]:
    """The params schema of an op function (its first parameter is the task)."""
    signature = inspect.signature(function)
    try:
        hints = typing.get_type_hints(function)
    except Exception as error:
        raise TypeError(f"op {op_name!r}: cannot read the type hints: {error}") from error
    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(f"op {op_name!r}: the function's first parameter must take the task")
    properties: dict[str, Any] = {}
    required: list[str] = []
    extra = False
    for parameter in parameters[1:]:
        where = f"op {op_name!r}, parameter {parameter.name!r}"
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            extra = True
            continue
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            raise TypeError(f"{where}: params are passed by name; use a named parameter")
        schema = dict(hint_schema(hints.get(parameter.name, Any), where))
        if parameter.default is inspect.Parameter.empty:
            required.append(parameter.name)
        else:
            shown, default = _json_default(parameter.default)
            if shown:
                schema["default"] = default
        properties[parameter.name] = schema
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    out["additionalProperties"] = extra
    return out
