"""Sentinel's benchmark: the gateway against a bare pass-through and the upstream itself.

``python -m bench`` (``make bench``) starts the mock upstream, then every target
(``direct``: no proxy; ``bare``: ``bench.passthrough``, the floor of the stack; ``sentinel``:
``sentinel serve``; ``routed``: Sentinel choosing among three upstreams; ``accounting``:
Sentinel keeping usage records and Redis usage counters; ``policy``: accounting plus Redis
limits), measures each scenario on each target in turn with ``bench.load`` (a process of its
own per measurement), in rounds, and prints one markdown table (each scenario's best round),
the performance targets met or missed, and the cost of counting a prompt. The proxies run on
the first CPU, one at a time under load.

Modules: ``scenarios`` (the matrix and the request bytes), ``load`` and ``http1`` (the load
generator and its response parser), ``window`` and ``procstat`` (CPU and memory from /proc),
``children`` and ``targets`` (the subprocesses, Redis included), ``counting`` (the counting
cost), ``runner`` (the whole run), ``goals`` (the targets), ``report`` (tables and JSON).

``python -m bench.profile`` (``make profile``) runs one target under one scenario with py-spy
sampling the proxy, and prints where its CPU goes (``stacks`` groups the samples).

``python -m bench.redis_cost`` counts redis-server's instructions per request and per usage
record with callgrind, at a chosen number of requests per call.
"""
