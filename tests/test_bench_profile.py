"""The profile of a proxy under load: collapsed stacks grouped into buckets, the report, a run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.children import REPO_ROOT
from bench.measurement import Measurement
from bench.profile import Sampled, main, render
from bench.stacks import (
    ENTRY,
    GENERATED,
    OTHER_STDLIB,
    TORN,
    Profile,
    bucket_of,
    parse_collapsed,
)

ROOT = "_run_module_as_main (<frozen runpy>:173);main (sentinel/__main__.py:180);"
LOOP = "Runner.run (asyncio/runners.py:86)"
APP = "RequestContextMiddleware.__call__ (sentinel/http/context.py:204)"
COLLAPSED = "\n".join(
    [
        f"{ROOT}{LOOP} 30",
        f"{ROOT}{LOOP};{APP};admit (sentinel/limits/gate.py:50) 20",
        f"{ROOT}{LOOP};{APP};admit (sentinel/limits/gate.py:50);"
        "execute (redis/asyncio/client.py:600) 10",
        f"{APP};log (structlog/_log.py:10);dumps (json/__init__.py:183) 15",
        "handle (hypercorn/protocol/h11.py:113);walk (sentinel/proxy/walk.py:5);"
        "walk (sentinel/proxy/walk.py:5) 25",
        "not a stack line",
        "",
    ]
)


@pytest.mark.parametrize(
    ("file", "bucket"),
    [
        ("sentinel/limits/gate.py", "sentinel.limits"),
        ("sentinel/deadline.py", "sentinel.deadline"),
        ("sentinel/__main__.py", ENTRY),
        ("<frozen runpy>", ENTRY),
        ("asyncio/runners.py", "event loop: asyncio + uvloop"),
        ("asyncio/streams.py", "event loop: asyncio + uvloop"),
        ("hypercorn/protocol/h11.py", "engine: hypercorn + h11"),
        ("h11/_util.py", "engine: hypercorn + h11"),
        ("uvicorn/protocols/http/httptools_impl.py", "engine: uvicorn + httptools"),
        ("aiohttp/client.py", "aiohttp client"),
        ("yarl/_url.py", "aiohttp client"),
        ("redis/asyncio/connection.py", "redis-py"),
        ("structlog/_log.py", "structlog + logging"),
        ("logging/__init__.py", "structlog + logging"),
        ("json/encoder.py", "json + orjson"),
        ("<string>", GENERATED),
        ("contextlib.py", OTHER_STDLIB),
        ("<frozen _collections_abc>", OTHER_STDLIB),
        ("<frozen importlib._bootstrap>", OTHER_STDLIB),
        ("somepkg/mod.py", "other: somepkg"),
    ],
)
def test_frames_are_bucketed_by_what_owns_their_file(file: str, bucket: str) -> None:
    """Sentinel's files go by subpackage, libraries by what they are, the rest by package."""
    assert bucket_of(file) == bucket


def test_collapsed_stacks_parse_outermost_first_and_skip_junk() -> None:
    """Each line is frames outermost first and a count; lines without a count are skipped."""
    stacks = parse_collapsed(COLLAPSED)
    assert [count for _, count in stacks] == [30, 20, 10, 15, 25]
    frames, _ = stacks[2]
    assert frames[0].function == "_run_module_as_main" and frames[0].file == "<frozen runpy>"
    assert (frames[-1].function, frames[-1].file, frames[-1].line) == (
        "execute",
        "redis/asyncio/client.py",
        600,
    )


def test_helpers_are_charged_to_the_part_that_called_them() -> None:
    """The standard library's helpers and generated code count toward their innermost caller
    with a part of its own, self and inclusive; with none above them they keep their own."""
    helpers = "\n".join(
        [
            "handle (hypercorn/protocol/h11.py:113);format_date_time (wsgiref/handlers.py:19) 4",
            f"{APP};admit (sentinel/limits/gate.py:50);__init__ (<string>:2);"
            "__enter__ (contextlib.py:132) 3",
            f"{ROOT}_bootstrap (threading.py:995) 2",
        ]
    )
    shares = {share.name: share for share in Profile.from_collapsed(helpers).buckets()}
    assert shares["engine: hypercorn + h11"].self_samples == 4
    assert (
        shares["sentinel.limits"].self_samples,
        shares["sentinel.limits"].inclusive_samples,
    ) == (
        3,
        3,
    )
    assert shares[OTHER_STDLIB].self_samples == 2 and GENERATED not in shares


def test_frames_read_mid_change_are_unreadable_not_misfiled() -> None:
    """A sampler that never pauses the process sometimes reads garbage: such frames (control
    bytes, no file, absurd line numbers) land in one bucket of their own."""
    torn = "\n".join(
        [
            f"{APP};\x00 (\x00:-1583864001) 6",
            f"{APP};\u2019 (\u00a0:1985447497) 1",
            f"{APP};   (- :1) 1",
            f"{APP};admit (sentinel/limits/gate.py:50) 2",
        ]
    )
    profile = Profile.from_collapsed(torn)
    shares = {share.name: share for share in profile.buckets()}
    assert shares[TORN].self_samples == 8
    assert shares["sentinel.limits"].self_samples == 2
    assert set(shares) == {TORN, "sentinel.limits", "sentinel.http"}
    [(frame, _)] = profile.top_self(1)
    assert frame.file == "" and frame.label.startswith("'")


def test_buckets_count_self_at_the_leaf_and_inclusive_anywhere_once() -> None:
    """Self time is the innermost frame's bucket; inclusive counts a sample once per bucket,
    however often the bucket recurs on its stack."""
    profile = Profile.from_collapsed(COLLAPSED)
    assert profile.samples == 100
    shares = {share.name: share for share in profile.buckets()}
    assert (shares["sentinel.proxy"].self_samples, shares["sentinel.proxy"].inclusive_samples) == (
        25,
        25,
    )
    loop = shares["event loop: asyncio + uvloop"]
    assert (loop.self_samples, loop.inclusive_samples) == (30, 60)
    limits = shares["sentinel.limits"]
    assert (limits.self_samples, limits.inclusive_samples) == (20, 30)
    assert (
        shares["sentinel.http"].inclusive_samples == 45
        and shares["sentinel.http"].self_samples == 0
    )
    assert shares["redis-py"].self_samples == 10
    assert shares["json + orjson"].self_samples == 15
    assert [s.name for s in profile.buckets()][:2] == [
        "event loop: asyncio + uvloop",
        "sentinel.proxy",
    ]


def test_top_functions_leave_the_entry_frames_out_of_inclusive() -> None:
    """The top self list starts with the busiest leaf; the inclusive list has no entry frame
    nor the loop's, and a recursive function counts once per sample."""
    profile = Profile.from_collapsed(COLLAPSED)
    [(frame, share)] = profile.top_self(1)
    assert frame.label == LOOP and share.self_samples == 30
    inclusive = profile.top_inclusive(10)
    names = [share.name for _, share in inclusive]
    assert names[0] == APP and inclusive[0][1].inclusive_samples == 45
    assert not any("runpy" in name or "__main__" in name or "runners" in name for name in names)
    walk = next(share for _, share in inclusive if share.name.startswith("walk"))
    assert (walk.self_samples, walk.inclusive_samples) == (25, 25)


def sampled(errors: int = 0) -> Sampled:
    """A profile of 100 samples over a run at 200 µs of proxy CPU per request."""
    measurement = Measurement(
        requests=1000,
        errors=errors,
        seconds=1.0,
        p50_us=2000,
        p90_us=3000,
        p99_us=4000,
        max_us=5000,
        mean_us=2100.0,
        body_bytes=900,
        statuses={"200": 1000},
        cpu_seconds=0.2,
        store_cpu_seconds=0.05,
        mock_cpu_seconds=0.1,
    )
    return Sampled(
        "policy", "json", 16, 1, 100, measurement, Profile.from_collapsed(COLLAPSED), "py-spy 0.4.3"
    )


def rows(text: str, header: str) -> dict[str, list[str]]:
    """The body rows of the markdown table under ``header``, by their first cell."""
    lines = text.splitlines()
    start = lines.index(header) + 2
    found = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        found[cells[0]] = cells[1:]
    return found


def test_report_turns_shares_into_microseconds_per_request() -> None:
    """Each bucket's share of the samples times the proxy's CPU per request is its µs/req;
    the loop's inclusive share, partial by nature, is not shown."""
    text = render(sampled(), top=3)
    assert text.startswith("Profile of `policy` json/16: py-spy 0.4.3, 100 Hz for 1 s")
    assert "1000 req/s" in text and "CPU per request (/proc): 200 µs" in text
    assert "redis-server 50 µs, mock 100 µs" in text
    buckets = rows(text, "| part | self µs/req | self % | inclusive µs/req | inclusive % |")
    assert buckets["sentinel.limits"] == ["40.0", "20.0%", "60.0", "30.0%"]
    assert buckets["event loop: asyncio + uvloop"] == ["60.0", "30.0%", "-", "-"]
    assert ENTRY not in buckets  # never innermost here
    top = rows(text, "| function | self µs/req | self % |")
    assert next(iter(top)) == f"`{LOOP}`" and len(top) == 3
    assert "errors: this profile is of a failing proxy" not in text
    assert "**3 errors: this profile is of a failing proxy**" in render(sampled(3), top=3)


def test_profile_refuses_bad_arguments() -> None:
    """An unknown target, a malformed scenario or a zero duration is a usage error (2)."""
    for bad in (
        ["--target", "direct"],
        ["--scenario", "json"],
        ["--scenario", "soap/2"],
        ["--seconds", "0"],
        ["--rate", "x"],
    ):
        with pytest.raises(SystemExit) as refused:
            main(bad)
        assert refused.value.code == 2


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_profile_of_policy_splits_its_cpu_by_part(tmp_path: Path) -> None:
    """``python -m bench.profile`` profiles the policy target under load: Sentinel's own
    subpackages and the engine show up, and the raw stacks are written."""
    raw = tmp_path / "stacks.txt"
    argv = ["--target", "policy", "--scenario", "json/2", "--seconds", "1", "--warmup", "0.3"]
    completed = subprocess.run(
        [sys.executable, "-m", "bench.profile", *argv, "--output", str(raw)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:] + completed.stdout[-3000:]
    text = completed.stdout
    assert text.startswith("Profile of `policy` json/2: py-spy")
    assert ", 0 errors;" in text
    buckets = rows(text, "| part | self µs/req | self % | inclusive µs/req | inclusive % |")
    for bucket in ("engine: hypercorn + h11", "sentinel.proxy", "sentinel.limits"):
        assert float(buckets[bucket][3].rstrip("%")) > 0, text
    stacks = parse_collapsed(raw.read_text())
    assert stacks and sum(count for _, count in stacks) > 50
