"""CPU time and resident memory of a process tree, read from Linux ``/proc``.

A proxy may run worker processes, so every reading covers the process and all its live
descendants (found through ``/proc/PID/task/TID/children``), plus the CPU time of children it
has already reaped (``cutime``/``cstime``). Off Linux, or once the process is gone, the
readers return None rather than guess.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "cpu_seconds",
    "descendants",
    "machine_busy_seconds",
    "parse_busy_ticks",
    "parse_cpu_ticks",
    "parse_rss_kib",
    "rss_bytes",
]

_PROC = Path("/proc")
_MAX_PROCESSES = 1024


def _ticks_per_second() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux
        return 100


def parse_cpu_ticks(stat: str) -> int:
    """utime + stime + cutime + cstime, in clock ticks, from the text of ``/proc/PID/stat``."""
    # The command name (field 2) is in parentheses and may itself contain spaces or ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime..cstime are fields 14..17.
    return sum(int(value) for value in fields[11:15])


def parse_rss_kib(status: str) -> int | None:
    """The ``VmRSS`` value in KiB from the text of ``/proc/PID/status`` (None if absent)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def parse_busy_ticks(stat: str) -> int:
    """Busy clock ticks of all CPUs together from the text of ``/proc/stat``.

    Busy is user + nice + system + irq + softirq + steal: everything but idle and iowait
    (guest time is already inside user).
    """
    fields = stat.split("\n", 1)[0].split()
    if fields[0] != "cpu":
        raise ValueError("/proc/stat does not start with the cpu line")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return user + nice + system + irq + softirq + steal


def machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine has been busy (summed over CPUs), or None off Linux."""
    try:
        return parse_busy_ticks((_PROC / "stat").read_text()) / _ticks_per_second()
    except (OSError, ValueError):
        return None


def descendants(pid: int) -> list[int]:
    """``pid`` followed by every live process below it (bounded, breadth first)."""
    found = [pid]
    index = 0
    while index < len(found) and len(found) < _MAX_PROCESSES:
        current = found[index]
        index += 1
        try:
            tasks = list((_PROC / str(current) / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            found.extend(int(child) for child in children if int(child) not in found)
    return found


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds used so far by ``pid`` and its descendants, or None if ``pid`` is gone."""
    total = 0
    for index, member in enumerate(descendants(pid)):
        try:
            total += parse_cpu_ticks((_PROC / str(member) / "stat").read_text())
        except (OSError, ValueError):
            if index == 0:
                return None
    return total / _ticks_per_second()


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` and its descendants in bytes, or None if ``pid`` is gone."""
    total = 0
    for index, member in enumerate(descendants(pid)):
        try:
            kib = parse_rss_kib((_PROC / str(member) / "status").read_text())
        except (OSError, ValueError):
            kib = None
        if kib is None:
            if index == 0:
                return None
            continue
        total += kib * 1024
    return total
