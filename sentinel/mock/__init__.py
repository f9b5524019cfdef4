"""``sentinel mock-upstream``: a deterministic OpenAI-compatible upstream for tests, demos and
the benchmark.

``serve`` runs it in the running loop (tests, the benchmark), ``run`` blocks until SIGINT or
SIGTERM (the CLI). Per-request headers override ``MockSettings``: ``x-mock-chunks``,
``x-mock-chunk-delay-ms``, ``x-mock-latency-ms``, ``x-mock-fault`` (``none`` lifts a default
fault) and, for ``/v1/audio/speech``, ``x-mock-bytes``; a bad value is an OpenAI-shaped 400.

Faults:

* ``status:<code>`` (400-599): OpenAI's error body for that status; 429 adds ``retry-after: 1``
  and ``retry-after-ms: 1000``.
* ``reset``: the connection is dropped with a TCP reset, no response.
* ``stall``: no response until the client goes away (or the server stops).
* ``die-after:<n>``: ``n`` parts of the reply (SSE events, audio chunks, or eighths of a JSON
  body), then the connection closes with the body unfinished.
* ``stall-after:<n>``: ``n`` parts, then nothing until the client goes away.
* ``no-usage``: no usage anywhere, even when a stream asked for it.
* ``no-done``: streams end cleanly without ``data: [DONE]`` (Responses: without
  ``response.completed``).
* ``slow-body``: a JSON body in eight parts, ``chunk_delay_ms`` (or 10 ms) apart.

``GET /mock/stats``, ``GET /mock/requests?limit=N`` and ``POST /mock/reset`` show and clear what
reached it; they are neither counted nor faulted. Token counting is described in
``sentinel.mock.prompts``.
"""

from sentinel.mock.server import create_app, run, serve
from sentinel.mock.settings import MockSettings

__all__ = ["MockSettings", "create_app", "run", "serve"]
