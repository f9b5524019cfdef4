"""Streams: the SSE framer, the per-stream accumulator, and the relay that feeds them."""
