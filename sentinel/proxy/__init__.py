"""The endpoints that proxy ``/v1/*`` to upstreams."""
