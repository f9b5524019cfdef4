"""Logs now; metrics and traces join with the observability issue."""
