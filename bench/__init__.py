"""Sentinel's benchmark: the gateway against a bare pass-through and the upstream itself.

``python -m bench`` (``make bench``) starts the mock upstream, then each target in turn
(``direct``: no proxy; ``bare``: ``bench.passthrough``, the floor of the stack; ``sentinel``:
``sentinel serve``; ``routed``: Sentinel choosing among three upstreams; ``accounting``:
Sentinel keeping usage records and Redis usage counters; ``policy``: accounting plus Redis
limits), drives each target's scenarios with ``bench.load`` in a process of its own, and prints one
markdown table, the performance targets met or missed, and the cost of counting a prompt. The
proxy under test runs alone on the first CPU.

Modules: ``scenarios`` (the matrix and the request bytes), ``load`` and ``http1`` (the load
generator and its response parser), ``window`` and ``procstat`` (CPU and memory from /proc),
``children`` and ``targets`` (the subprocesses, Redis included), ``counting`` (the counting
cost), ``runner`` (the whole run), ``goals`` (the targets), ``report`` (tables and JSON).
"""
