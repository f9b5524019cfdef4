"""Token counting: offline tiktoken encodings, model resolution and prompt counts.

Startup loads the encodings once (``Encodings.load()``, ≈0.2-0.4 s each, no network) and builds
one ``PromptCounter``; each request resolves its model with ``counter.for_model(model)`` and
counts with the returned ``ModelCounter``. Use these objects, never ``tiktoken.get_encoding`` or
``tiktoken.encoding_for_model``: those download BPE files on first use.

Errors::

    Exception
    └── TokenizerError   encoding data missing, unreadable or not matching tiktoken's pinned hash
"""

from sentinel.tokens.encodings import DEFAULT_ENCODINGS, DataSource, Encodings, TokenizerError
from sentinel.tokens.models import ModelResolver
from sentinel.tokens.prompts import Api, ModelCounter, PromptCounter, completion_cap

__all__ = [
    "DEFAULT_ENCODINGS",
    "Api",
    "DataSource",
    "Encodings",
    "ModelCounter",
    "ModelResolver",
    "PromptCounter",
    "TokenizerError",
    "completion_cap",
]
