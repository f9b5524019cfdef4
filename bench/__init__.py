"""Sentinel's benchmark: the gateway against a bare pass-through and the upstream itself.

``python -m bench`` (``make bench``) starts the mock upstream, then each target in turn
(``direct``: no proxy; ``bare``: ``bench.passthrough``, the floor of the stack; ``sentinel``:
``sentinel serve``), drives each scenario with ``bench.load`` in its own process, and prints
one markdown table. The proxy under test runs alone on the first CPU.

Modules: ``scenarios`` (the matrix and the request bytes), ``load`` and ``http1`` (the load
generator and its response parser), ``procstat`` (CPU and memory from /proc), ``children``
and ``targets`` (the subprocesses), ``runner`` (the matrix run), ``report`` (table and JSON).
"""
