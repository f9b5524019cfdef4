"""Tokens for tool and function definitions, after the OpenAI cookbook's accounting.

OpenAI renders definitions into the prompt in a format it does not publish. The cookbook
("How to count tokens with tiktoken", section 7) gives an approximation that matches the API on
its example (105 tokens for cl100k models, 101 for o200k ones): per function ``func_init`` plus
``name:description``; per property ``prop_key`` plus ``name:type:description``; ``prop_init``
once per non-empty property list; ``enum_init`` plus ``enum_item`` and the text per enum value;
``func_end`` once. Schema parts the cookbook does not cover (nested objects, ``items``,
``anyOf``, …) and non-function tools (web search, file search, …) count conservatively.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sentinel.tokens.content import ContentCounter

__all__ = ["ToolFormat", "count_tool_definitions", "tool_format"]

_COVERED_PROPERTY_KEYS = frozenset({"type", "description", "enum"})
_COVERED_PARAMETER_KEYS = frozenset({"type", "properties", "required"})


@dataclass(frozen=True, slots=True)
class ToolFormat:
    """The cookbook's per-model constants for tool definitions."""

    func_init: int
    prop_init: int = 3
    prop_key: int = 3
    enum_init: int = -3
    enum_item: int = 3
    func_end: int = 12


_CL100K_TOOLS = ToolFormat(func_init=10)
_O200K_TOOLS = ToolFormat(func_init=7)


def tool_format(encoding: str) -> ToolFormat:
    """The constants for models of ``encoding`` (cl100k: GPT-4 era; everything else: GPT-4o)."""
    return _CL100K_TOOLS if encoding == "cl100k_base" else _O200K_TOOLS


def count_tool_definitions(
    content: ContentCounter, fmt: ToolFormat, tools: object, functions: object = None
) -> int:
    """Tokens for Chat ``tools``/``functions`` or Responses ``tools`` definitions."""
    definitions: list[Mapping[str, object]] = []
    total = 0
    for tool in _as_list(tools):
        if isinstance(tool, dict) and tool.get("type") == "function":
            inner = tool.get("function")  # Chat nests the definition; Responses does not
            definitions.append(inner if isinstance(inner, dict) else tool)
        else:
            total += content.unknown(tool)
    for function in _as_list(functions):
        if isinstance(function, dict):
            definitions.append(function)
        else:
            total += content.unknown(function)
    if definitions:
        total += fmt.func_end
        total += sum(_function(content, fmt, definition) for definition in definitions)
    return total


def _as_list(value: object) -> list[object]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _function(content: ContentCounter, fmt: ToolFormat, function: Mapping[str, object]) -> int:
    name, description = function.get("name"), function.get("description")
    line = f"{_text(name)}:{_text(description).removesuffix('.')}"
    total = fmt.func_init + content.text(line) + _odd(content, name) + _odd(content, description)
    for key, value in function.items():
        if key == "parameters" and isinstance(value, dict):
            total += _parameters(content, fmt, value)
        elif key not in ("name", "description", "type", "strict"):
            total += content.unknown(value)
    return total


def _parameters(content: ContentCounter, fmt: ToolFormat, parameters: Mapping[str, object]) -> int:
    total = 0
    properties = parameters.get("properties")
    if isinstance(properties, dict) and properties:
        total += fmt.prop_init
        for name, schema in properties.items():
            total += fmt.prop_key + _property(content, fmt, str(name), schema)
    elif properties is not None and not isinstance(properties, dict):
        total += content.unknown(properties)
    for key, value in parameters.items():
        if key not in _COVERED_PARAMETER_KEYS:
            total += content.text(key) + content.unknown(value)
    return total


def _property(content: ContentCounter, fmt: ToolFormat, name: str, schema: object) -> int:
    if not isinstance(schema, dict):
        return content.text(name) + content.unknown(schema)
    kind, description = schema.get("type"), schema.get("description")
    if isinstance(kind, list):  # ["string", "null"]
        kind = " | ".join(item if isinstance(item, str) else "" for item in kind)
    line = f"{name}:{_text(kind)}:{_text(description).removesuffix('.')}"
    total = content.text(line) + _odd(content, kind) + _odd(content, description)
    enum = schema.get("enum")
    if isinstance(enum, list):
        total += fmt.enum_init
        for item in enum:
            total += fmt.enum_item + (content.text(item) if isinstance(item, str) else 1)
    for key, value in schema.items():
        if key not in _COVERED_PROPERTY_KEYS:
            total += content.text(key) + content.unknown(value)
    return total


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _odd(content: ContentCounter, value: object) -> int:
    """Conservative tokens for a field that should have been a string."""
    return 0 if value is None or isinstance(value, str) else content.unknown(value)
