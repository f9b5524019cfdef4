"""Caller authentication: API keys to principals."""
