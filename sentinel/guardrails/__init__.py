"""Content rules (``[[rules]]``) and PII redaction (``[pii]``) on the texts a request carries
to the model and the texts of its reply, in linear time whatever the patterns (RE2).

``Guardrails`` decides per request which rules apply (``policy``); ``enforce`` screens request
bodies and JSON replies; ``GuardedStream`` screens streamed replies with a bounded hold-back.
Metrics and logs learn which rule fired and how often, never the text it matched.
"""

from sentinel.guardrails.enforce import screen_json_reply, screen_request_body
from sentinel.guardrails.policy import Guardrails, Policy
from sentinel.guardrails.screen import Blocked, Entry, Hits, Screen, TextScreen
from sentinel.guardrails.stream import GuardedStream

__all__ = [
    "Blocked",
    "Entry",
    "GuardedStream",
    "Guardrails",
    "Hits",
    "Policy",
    "Screen",
    "TextScreen",
    "screen_json_reply",
    "screen_request_body",
]
