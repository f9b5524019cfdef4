"""The HTTP edge: request context, headers and request bodies."""
