"""Every text of a request that reaches the model, and of a reply, screened in place.

Request texts, with the role whose rules read them:

    chat         messages[].content (string or text parts) and refusal, by the message's role;
                 assistant tool_calls[].function.arguments and function_call.arguments;
                 tools[].function description and parameters, functions[] (role system)
    completions  prompt and suffix (role user); token arrays are decoded with the model's
                 encoding, screened, and encoded again only when redacted
    embeddings   input (role user), token arrays as for completions
    responses    instructions (role system); input as a string (user) or items: messages by
                 their role, function_call arguments (assistant), function_call_output and
                 custom tool outputs (tool); tools[] description and parameters (system)

A message whose role is not one of the known ones is read by every request rule. Reply texts
are the choices' content, refusal, text and tool-call arguments, and a Responses object's
output text, refusals and function-call arguments; ``logprobs`` go where a reply was redacted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tiktoken

from sentinel.config.guardrails import ROLES
from sentinel.errors import InvalidRequest
from sentinel.guardrails.policy import ANY_ROLE, Policy
from sentinel.guardrails.screen import Hits, Screen

__all__ = ["screen_reply", "screen_request"]

_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
_TOOL_OUTPUTS = frozenset({"function_call_output", "custom_tool_call_output"})
_MAX_DEPTH = 64  # of tool parameter schemas walked


class _Walk:
    """One walk over a body: screens each text with the screen of its role."""

    __slots__ = ("changed", "encoding", "hits", "policy")

    def __init__(self, policy: Policy, hits: Hits, encoding: tiktoken.Encoding | None) -> None:
        self.policy = policy
        self.hits = hits
        self.encoding = encoding
        self.changed = False

    def field(self, obj: dict[str, Any], key: str, role: str) -> None:
        """Screen ``obj[key]`` if it is a string."""
        value = obj.get(key)
        if type(value) is str and value:
            screen = self.policy.request(role)
            if screen is not None:
                self._set(obj, key, screen.text(value, self.hits))

    def _set(self, obj: Any, key: Any, new: object) -> None:
        if new is not obj[key]:
            obj[key] = new
            self.changed = True

    def content(self, obj: dict[str, Any], key: str, role: str) -> None:
        """A string or a list of content parts."""
        value = obj.get(key)
        if type(value) is str:
            self.field(obj, key, role)
        elif type(value) is list:
            for part in value:
                if type(part) is dict:
                    if part.get("type") in _TEXT_PARTS or "text" in part:
                        self.field(part, "text", role)
                    self.field(part, "refusal", role)

    def strings(self, value: Any, role: str, depth: int = 0) -> None:
        """Every string value inside a JSON value (a tool's parameter schema)."""
        if depth > _MAX_DEPTH:
            raise InvalidRequest("A tool schema is nested too deeply.", code="invalid_value")
        if type(value) is dict:
            for key in list(value):
                if type(value[key]) is str:
                    self.field(value, key, role)
                else:
                    self.strings(value[key], role, depth + 1)
        elif type(value) is list:
            for i, item in enumerate(value):
                if type(item) is str:
                    screen = self.policy.request(role)
                    if screen is not None:
                        self._set(value, i, screen.text(item, self.hits))
                else:
                    self.strings(item, role, depth + 1)

    def prompt(self, obj: dict[str, Any], key: str) -> None:
        """A string, a list of strings, a token array or a list of token arrays (role user)."""
        value = obj.get(key)
        if type(value) is str:
            self.field(obj, key, "user")
        elif type(value) is list and value:
            if type(value[0]) is int:
                self._tokens(obj, key)
                return
            for i, item in enumerate(value):
                if type(item) is str:
                    self.field_at(value, i)
                elif type(item) is list:
                    self._tokens(value, i)

    def field_at(self, items: list[Any], index: int) -> None:
        screen = self.policy.request("user")
        if screen is not None:
            self._set(items, index, screen.text(items[index], self.hits))

    def _tokens(self, holder: Any, key: Any) -> None:
        screen = self.policy.request("user")
        if screen is None:
            return
        tokens = holder[key]
        text = _decode(self.encoding, tokens)
        screened = screen.text(text, self.hits)
        if screened is not text and self.encoding is not None:
            holder[key] = self.encoding.encode_ordinary(screened)
            self.changed = True


def _decode(encoding: tiktoken.Encoding | None, tokens: list[Any]) -> str:
    """A token array as the text the model reads; 400 when it is not one Sentinel can read."""
    problem = "This gateway screens prompts, so token arrays must be valid tokens of the model."
    if encoding is None or not all(type(t) is int and 0 <= t < encoding.n_vocab for t in tokens):
        raise InvalidRequest(problem, code="invalid_value", param="prompt")
    try:
        return encoding.decode(tokens, errors="replace")
    except (KeyError, ValueError, OverflowError):  # an id inside n_vocab that has no bytes
        raise InvalidRequest(problem, code="invalid_value", param="prompt") from None


def screen_request(
    api: str, body: dict[str, Any], policy: Policy, hits: Hits, encoding: tiktoken.Encoding | None
) -> bool:
    """Screen every text of ``body`` in place; whether anything was redacted. Raises
    ``Blocked`` for a block rule."""
    walk = _Walk(policy, hits, encoding)
    if api == "chat":
        _chat(walk, body)
    elif api == "completions":
        walk.prompt(body, "prompt")
        walk.field(body, "suffix", "user")
    elif api == "embeddings":
        walk.prompt(body, "input")
    elif api == "responses":
        _responses(walk, body)
    return walk.changed


def _role(message: dict[str, Any]) -> str:
    """The message's role; one Sentinel does not know (or none) is read by every rule."""
    role = message.get("role")
    return role if role in ROLES else ANY_ROLE


def _chat(walk: _Walk, body: dict[str, Any]) -> None:
    messages = body.get("messages")
    for message in messages if type(messages) is list else ():
        if type(message) is not dict:
            continue
        role = _role(message)
        walk.content(message, "content", role)
        walk.field(message, "refusal", role)
        _calls(walk, message, role)
    _tools(walk, body.get("tools"), nested=True)
    _tools(walk, body.get("functions"), nested=False)


def _calls(walk: _Walk, message: dict[str, Any], role: str) -> None:
    calls = message.get("tool_calls")
    for call in calls if type(calls) is list else ():
        function = call.get("function") if type(call) is dict else None
        if type(function) is dict:
            walk.field(function, "arguments", role)
    function_call = message.get("function_call")
    if type(function_call) is dict:
        walk.field(function_call, "arguments", role)


def _tools(walk: _Walk, tools: object, *, nested: bool) -> None:
    for tool in tools if type(tools) is list else ():
        if type(tool) is not dict:
            continue
        function = tool.get("function") if nested else tool
        if type(function) is dict:
            walk.field(function, "description", "system")
            walk.strings(function.get("parameters"), "system")


def _responses(walk: _Walk, body: dict[str, Any]) -> None:
    walk.field(body, "instructions", "system")
    items = body.get("input")
    if type(items) is str:
        walk.field(body, "input", "user")
    for item in items if type(items) is list else ():
        if type(item) is not dict:
            continue
        kind = item.get("type")
        if kind in _TOOL_OUTPUTS:
            walk.content(item, "output", "tool")
        elif kind == "function_call":
            walk.field(item, "arguments", "assistant")
        elif kind == "custom_tool_call":
            walk.field(item, "input", "assistant")
        elif "role" in item:
            walk.content(item, "content", _role(item))
    tools = body.get("tools")
    for tool in tools if type(tools) is list else ():
        if type(tool) is dict and tool.get("type") in ("function", "custom"):
            walk.field(tool, "description", "system")
            walk.strings(tool.get("parameters"), "system")


# --- replies ----------------------------------------------------------------------------------


def screen_reply(body: Any, screen: Screen, hits: Hits) -> bool:
    """Screen a JSON reply's texts in place (dropping ``logprobs`` where one was redacted);
    whether anything was. Raises ``Blocked`` for a block rule."""
    changed = False

    def text(obj: dict[str, Any], key: str) -> bool:
        value = obj.get(key)
        if type(value) is not str or not value:
            return False
        new = screen.text(value, hits)
        if new is value:
            return False
        obj[key] = new
        return True

    if type(body) is not dict:
        return False
    choices = body.get("choices")
    for choice in choices if type(choices) is list else ():
        if type(choice) is dict and _choice(choice, text):
            changed = True
            if choice.get("logprobs") is not None:
                choice["logprobs"] = None
    output = body.get("output")
    for item in output if type(output) is list else ():
        if type(item) is dict and _output_item(item, text):
            changed = True
    if "output_text" in body and text(body, "output_text"):
        changed = True
    return changed


def _choice(choice: dict[str, Any], text: Callable[[dict[str, Any], str], bool]) -> bool:
    changed = text(choice, "text")
    message = choice.get("message")
    if type(message) is dict:
        changed = text(message, "content") | changed
        changed = text(message, "refusal") | changed
        calls = message.get("tool_calls")
        for call in calls if type(calls) is list else ():
            function = call.get("function") if type(call) is dict else None
            if type(function) is dict:
                changed = text(function, "arguments") | changed
    return changed


def _output_item(item: dict[str, Any], text: Callable[[dict[str, Any], str], bool]) -> bool:
    changed = text(item, "arguments") if item.get("type") == "function_call" else False
    content = item.get("content")
    for part in content if type(content) is list else ():
        if type(part) is dict:
            part_changed = text(part, "text") | text(part, "refusal")
            if part_changed and "logprobs" in part:
                part["logprobs"] = []
            changed = part_changed | changed
    return changed
