"""Checks of the environment a config needs: the places on disk that ``serve`` will write to.

``check-config`` reports these problems next to the file's own, and ``serve`` refuses to start
on them, so that an unwritable spool is found before anything listens. Nothing is created: a
directory that does not exist yet is fine when its nearest existing ancestor is writable.
"""

from __future__ import annotations

import os
from pathlib import Path

from sentinel.config.model import Config

__all__ = ["environment_problems"]


def environment_problems(config: Config) -> list[str]:
    """Every path ``config`` writes to that cannot be created or written, with its config key."""
    usage = config.usage
    problems: list[str] = []
    # The same condition as ``build_sinks``: without a sink, the spool is never opened.
    keeps_records = (
        usage.jsonl_path is not None
        or usage.webhook is not None
        or (config.redis is not None and usage.redis_counters)
    )
    if keeps_records:
        problem = _directory_problem(usage.spool_dir)
        if problem is not None:
            problems.append(f"usage.spool_dir: {problem}")
    if usage.jsonl_path is not None:
        problem = _file_problem(usage.jsonl_path)
        if problem is not None:
            problems.append(f"usage.jsonl_path: {problem}")
    return problems


def _directory_problem(directory: Path) -> str | None:
    """Why ``directory`` cannot be used (created if missing, then written), or None."""
    for existing in (directory, *directory.parents):
        try:
            is_directory = existing.is_dir()
            present = is_directory or existing.exists()
        except OSError as error:  # e.g. a parent that may not be searched
            return f"cannot inspect {str(existing)!r}: {error.strerror or error}"
        if not present:
            continue
        if not is_directory:
            return f"{str(existing)!r} is not a directory, so {str(directory)!r} cannot be one"
        if not os.access(existing, os.W_OK | os.X_OK):
            verb = "write to" if existing == directory else f"create {str(directory)!r} in"
            return f"cannot {verb} {str(existing)!r}: permission denied"
        return None
    return None  # a relative path below a missing working directory: nothing to check


def _file_problem(path: Path) -> str | None:
    """Why a file at ``path`` cannot be appended to (its directory created if missing), or None."""
    if path.is_dir():
        return f"{str(path)!r} is a directory, expected a file"
    if path.exists() and not os.access(path, os.W_OK):
        return f"cannot write to {str(path)!r}: permission denied"
    return _directory_problem(path.parent)
