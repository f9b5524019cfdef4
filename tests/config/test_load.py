"""Tests for ``sentinel.config``: loading, validation with paths, env secrets, defaults."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest

from sentinel.config import (
    AdminConfig,
    Config,
    ConfigError,
    KeyConfig,
    RedisConfig,
    ServerConfig,
    TelemetryConfig,
    UpstreamConfig,
    embedded_config,
    format_key_hash,
    hash_key,
    load_config,
    resolve_config_path,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "sentinel.example.toml"
UPSTREAM = '[[upstreams]]\nname = "u"\nbase_url = "http://127.0.0.1:9000/v1"\n'
DIGEST = "sha256:" + "ab" * 32


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sentinel.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={} if env is None else env)
    return info.value.problems


# --- whole files ----------------------------------------------------------------------------


def test_example_file_loads() -> None:
    """The shipped example loads without problems once its env variables are set."""
    env = {"OPENAI_API_KEY": "sk-upstream", "SENTINEL_KEY_TEAM_A": "sk-team-a-key"}
    config = load_config(EXAMPLE, env=env)
    assert [u.name for u in config.upstreams] == ["local", "openai"]
    assert config.upstreams[0].models == ("llama-*", "mock-*")
    assert config.upstreams[1].api_key == "sk-upstream"
    assert config.keys[0].key_sha256 == hash_key("sk-team-a-key")
    assert config.source == EXAMPLE


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    """A file with only one upstream gets every documented default."""
    path = write(tmp_path, UPSTREAM)
    config = load_config(path, env={})
    assert config == Config(
        upstreams=(UpstreamConfig(name="u", base_url="http://127.0.0.1:9000/v1"),),
        source=path,
    )
    assert config.server == ServerConfig()
    assert config.redis is None
    assert config.admin == AdminConfig()
    assert config.telemetry == TelemetryConfig()


def test_every_field_is_read(tmp_path: Path) -> None:
    """Every key of every section lands in its dataclass field."""
    text = f"""
[server]
bind = "[::1]:0"
workers = 4
max_body_bytes = 1024
shutdown_grace_s = 0
[redis]
url = "rediss://cache.internal:6380/2"
timeout_ms = 50
on_unavailable = "deny"
replicas = 3
[admin]
token = "admin-token"
[telemetry]
log_format = "console"
log_level = "debug"
[[upstreams]]
name = "local.v2"
base_url = "http://127.0.0.1:9000/v1/"
api_key = "sk-up"
models = ["llama-*"]
connect_timeout_ms = 1
first_byte_timeout_ms = 2
idle_timeout_ms = 3
timeout_ms = 4
max_connections = 5
headers = {{ "X-Org" = "a\\tb" }}
[[keys]]
name = "k"
key_sha256 = "{DIGEST}"
rpm = 1
tpm = 2
"""
    config = load_config(write(tmp_path, text), env={})
    assert config.server == ServerConfig("[::1]:0", 4, 1024, 0)
    assert config.redis == RedisConfig("rediss://cache.internal:6380/2", 50, "deny", 3)
    assert config.admin.token == "admin-token"
    assert config.telemetry == TelemetryConfig("console", "debug")
    assert config.upstreams[0] == UpstreamConfig(
        "local.v2", "http://127.0.0.1:9000/v1", "sk-up", ("llama-*",), 1, 2, 3, 4, 5,
        (("X-Org", "a\tb"),),
    )  # fmt: skip
    assert config.keys == (KeyConfig("k", bytes.fromhex("ab" * 32), 1, 2),)


def test_base_url_trailing_slashes_are_removed(tmp_path: Path) -> None:
    """A base_url is stored without trailing slashes so that paths can be appended."""
    text = '[[upstreams]]\nname = "u"\nbase_url = "https://example.com/v1//"\n'
    assert load_config(write(tmp_path, text), env={}).upstreams[0].base_url == (
        "https://example.com/v1"
    )


# --- file-level failures --------------------------------------------------------------------


def test_missing_file_is_one_problem_naming_it(tmp_path: Path) -> None:
    """A file that does not exist is a ConfigError naming the file."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.problems == [f"{path}: no such file"]


def test_directory_is_one_problem_naming_it(tmp_path: Path) -> None:
    """A directory in place of the file is a ConfigError naming it."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, env={})
    [problem] = info.value.problems
    assert problem.startswith(f"{tmp_path}: cannot read")


def test_toml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    """A TOML syntax error is reported with the file, line and column."""
    path = write(tmp_path, UPSTREAM + "[server]\nbind = \n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    [problem] = info.value.problems
    assert problem.startswith(f"{path}: invalid TOML: ")
    assert "line 5, column 8" in problem


def test_non_utf8_file_is_a_problem(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are a ConfigError, not a UnicodeDecodeError."""
    path = tmp_path / "bad.toml"
    path.write_bytes(b"name = '\xff'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.problems[0].startswith(f"{path}: not UTF-8 text")


def test_error_str_is_one_problem_per_line(tmp_path: Path) -> None:
    """str(ConfigError) lists the problems one per line, and the error survives pickling."""
    error = ConfigError(["a: one", "b: two"])
    assert str(error) == "a: one\nb: two"
    assert pickle.loads(pickle.dumps(error)).problems == ["a: one", "b: two"]


# --- rules, one failing case each, with the exact path --------------------------------------

INVALID = [
    # [server]
    ('[server]\nbind = "localhost"', "server.bind: expected HOST:PORT, got 'localhost'"),
    ('[server]\nbind = ":8080"', "server.bind: expected HOST:PORT, got ':8080'"),
    ('[server]\nbind = "h:65536"', "server.bind: expected a port from 0 to 65535, got 'h:65536'"),
    ('[server]\nbind = "h:http"', "server.bind: expected a port from 0 to 65535, got 'h:http'"),
    (
        '[server]\nbind = "::1:8080"',
        "server.bind: write an IPv6 host in brackets, as in '[::1]:8080', got '::1:8080'",
    ),
    (
        '[server]\nbind = "[nope]:80"',
        "server.bind: expected an IPv6 address inside [ ], got '[nope]:80'",
    ),
    ("[server]\nbind = 8080", "server.bind: expected a string, got 8080"),
    ("[server]\nworkers = 0", "server.workers: must be at least 1, got 0"),
    ("[server]\nmax_body_bytes = 0", "server.max_body_bytes: must be at least 1, got 0"),
    ("[server]\nshutdown_grace_s = -1", "server.shutdown_grace_s: must be at least 0, got -1"),
    ("[server]\nshutdown_grace_s = 1.5", "server.shutdown_grace_s: expected an integer, got 1.5"),
    (
        "[server]\nworkers = 2",
        "server.workers: more than one worker needs [redis]; the in-memory store is per process",
    ),
    # [redis]
    (
        '[redis]\nurl = "http://r:6379"',
        "redis.url: expected a redis://, rediss:// or unix:// URL, got scheme 'http'",
    ),
    ('[redis]\nurl = "redis://"', "redis.url: expected a host, as in redis://127.0.0.1:6379/0"),
    (
        '[redis]\nurl = "unix://"',
        "redis.url: a unix:// URL needs a socket path, as in unix:///run/redis.sock",
    ),
    ("[redis]\ntimeout_ms = 0", "redis.timeout_ms: must be at least 1, got 0"),
    (
        '[redis]\non_unavailable = "allow"',
        "redis.on_unavailable: expected one of 'local', 'deny', got 'allow'",
    ),
    ("[redis]\nreplicas = 0", "redis.replicas: must be at least 1, got 0"),
    # [admin]
    ('[admin]\ntoken = ""', "admin.token: must not be empty"),
    ("[admin]\ntoken = 42", "admin.token: expected a string, got an integer"),
    # [telemetry]
    (
        '[telemetry]\nlog_format = "xml"',
        "telemetry.log_format: expected one of 'json', 'console', got 'xml'",
    ),
    (
        '[telemetry]\nlog_level = "trace"',
        "telemetry.log_level: expected one of 'debug', 'info', 'warning', 'error', got 'trace'",
    ),
]


@pytest.mark.parametrize(("extra", "expected"), INVALID)
def test_invalid_section_value_is_reported_with_its_path(
    tmp_path: Path, extra: str, expected: str
) -> None:
    """Each bad value in [server], [redis], [admin] or [telemetry] is exactly one problem."""
    assert problems(tmp_path, UPSTREAM + extra + "\n") == [expected]


UPSTREAM_INVALID = [
    ('base_url = "http://h"', "upstreams[0].name: is required"),
    ('name = "u"', "upstreams[0].base_url: is required"),
    (
        'name = "a b"\nbase_url = "http://h"',
        "upstreams[0].name: expected 1 to 64 of A-Z a-z 0-9 _ . -, got 'a b'",
    ),
    (
        f'name = "{"x" * 65}"\nbase_url = "http://h"',
        f"upstreams[0].name: expected 1 to 64 of A-Z a-z 0-9 _ . -, got '{'x' * 57}...'",
    ),
    (
        'name = "u"\nbase_url = "ftp://x"',
        "upstreams[0].base_url: expected an http(s) URL, got 'ftp://x'",
    ),
    (
        'name = "u"\nbase_url = "https://"',
        "upstreams[0].base_url: expected an http(s) URL, got 'https://'",
    ),
    (
        'name = "u"\nbase_url = "http://h:99999"',
        "upstreams[0].base_url: expected an http(s) URL, got 'http://h:99999'",
    ),
    (
        'name = "u"\nbase_url = "http://h/v1?x=1"',
        "upstreams[0].base_url: must not have a query or fragment (paths are appended),"
        " got 'http://h/v1?x=1'",
    ),
    (
        'name = "u"\nbase_url = "http://h"\napi_key = ""',
        "upstreams[0].api_key: must not be empty",
    ),
    (
        'name = "u"\nbase_url = "http://h"\napi_key = "sk\\nx"',
        "upstreams[0].api_key: must not contain control characters",
    ),
    (
        'name = "u"\nbase_url = "http://h"\nmodels = []',
        "upstreams[0].models: expected a non-empty array of strings, got an array",
    ),
    (
        'name = "u"\nbase_url = "http://h"\nmodels = ["a", ""]',
        "upstreams[0].models[1]: expected a non-empty string, got ''",
    ),
    (
        'name = "u"\nbase_url = "http://h"\nmodels = "*"',
        "upstreams[0].models: expected a non-empty array of strings, got '*'",
    ),
    (
        'name = "u"\nbase_url = "http://h"\nconnect_timeout_ms = 0',
        "upstreams[0].connect_timeout_ms: must be at least 1, got 0",
    ),
    (
        'name = "u"\nbase_url = "http://h"\nfirst_byte_timeout_ms = 0',
        "upstreams[0].first_byte_timeout_ms: must be at least 1, got 0",
    ),
    (
        'name = "u"\nbase_url = "http://h"\nidle_timeout_ms = 0',
        "upstreams[0].idle_timeout_ms: must be at least 1, got 0",
    ),
    (
        'name = "u"\nbase_url = "http://h"\ntimeout_ms = 0',
        "upstreams[0].timeout_ms: must be at least 1, got 0",
    ),
    (
        'name = "u"\nbase_url = "http://h"\nmax_connections = 0',
        "upstreams[0].max_connections: must be at least 1, got 0",
    ),
    (
        'name = "u"\nbase_url = "http://h"\nheaders = { "X Bad" = "v" }',
        "upstreams[0].headers: 'X Bad' is not a valid HTTP header name",
    ),
    (
        'name = "u"\nbase_url = "http://h"\nheaders = { "X-A" = "v\\r\\nX-B: 1" }',
        "upstreams[0].headers.X-A: must not contain CR, LF, NUL or other control characters",
    ),
    (
        'name = "u"\nbase_url = "http://h"\nheaders = { "X-A" = 1 }',
        "upstreams[0].headers.X-A: expected a string, got an integer",
    ),
    (
        'name = "u"\nbase_url = "http://h"\nheaders = "X-A: 1"',
        "upstreams[0].headers: expected a table of name = value strings, got 'X-A: 1'",
    ),
]


@pytest.mark.parametrize(("body", "expected"), UPSTREAM_INVALID)
def test_invalid_upstream_is_reported_with_its_path(
    tmp_path: Path, body: str, expected: str
) -> None:
    """Each bad [[upstreams]] field is exactly one problem under upstreams[i]."""
    assert problems(tmp_path, f"[[upstreams]]\n{body}\n") == [expected]


KEY_INVALID = [
    (f'key_sha256 = "{DIGEST}"', "keys[0].name: is required"),
    (
        'name = "a/b"\nkey = "sk-long-enough"',
        "keys[0].name: expected 1 to 64 of A-Z a-z 0-9 _ . -, got 'a/b'",
    ),
    ('name = "k"', "keys[0]: set exactly one of 'key' or 'key_sha256'"),
    (
        f'name = "k"\nkey = "sk-long-enough"\nkey_sha256 = "{DIGEST}"',
        "keys[0]: set exactly one of 'key' or 'key_sha256'",
    ),
    ('name = "k"\nkey = "short"', "keys[0].key: must be at least 8 characters"),
    (
        'name = "k"\nkey = " sk-padded-key "',
        "keys[0].key: must not start or end with whitespace (clients' keys are trimmed)",
    ),
    (f'name = "k"\nkey = "{"x" * 513}"', "keys[0].key: must be at most 512 bytes"),
    (
        'name = "k"\nkey_sha256 = "abcd"',
        "keys[0].key_sha256: expected 'sha256:' and 64 hex digits (see 'sentinel keys hash'),"
        " got 'abcd'",
    ),
    (f'name = "k"\nkey_sha256 = "{DIGEST}"\nrpm = -1', "keys[0].rpm: must be at least 0, got -1"),
    (f'name = "k"\nkey_sha256 = "{DIGEST}"\ntpm = -5', "keys[0].tpm: must be at least 0, got -5"),
]


@pytest.mark.parametrize(("body", "expected"), KEY_INVALID)
def test_invalid_key_is_reported_with_its_path(tmp_path: Path, body: str, expected: str) -> None:
    """Each bad [[keys]] field is exactly one problem under keys[i]."""
    assert problems(tmp_path, f"{UPSTREAM}[[keys]]\n{body}\n") == [expected]


def test_section_that_is_not_a_table_is_rejected(tmp_path: Path) -> None:
    """A section name bound to a plain value is a problem at the section's path."""
    assert problems(tmp_path, 'server = "x"\n' + UPSTREAM) == [
        "server: expected a table ([server]), got 'x'"
    ]


def test_at_least_one_upstream_is_required(tmp_path: Path) -> None:
    """A file without [[upstreams]] is rejected."""
    assert problems(tmp_path, "[server]\nworkers = 1\n") == [
        "upstreams: at least one [[upstreams]] entry is required"
    ]


def test_upstreams_as_single_table_is_rejected(tmp_path: Path) -> None:
    """[upstreams] written as one table instead of an array of tables is a problem."""
    text = '[upstreams]\nname = "u"\nbase_url = "http://h"\n'
    assert problems(tmp_path, text) == [
        "upstreams: expected an array of tables ([[upstreams]]), got a table"
    ]


def test_duplicate_upstream_names_are_rejected(tmp_path: Path) -> None:
    """Two upstreams with one name are a problem on the second."""
    assert problems(tmp_path, UPSTREAM + UPSTREAM) == [
        "upstreams[1].name: duplicate name 'u' (also upstreams[0])"
    ]


def test_duplicate_key_names_are_rejected(tmp_path: Path) -> None:
    """Two keys with one name are a problem on the second."""
    text = UPSTREAM + '[[keys]]\nname = "k"\nkey = "sk-first-key"\n'
    text += '[[keys]]\nname = "k"\nkey = "sk-second-key"\n'
    assert problems(tmp_path, text) == ["keys[1].name: duplicate name 'k' (also keys[0])"]


def test_two_keys_with_one_digest_are_rejected(tmp_path: Path) -> None:
    """A plain key and a key_sha256 of the same key are a problem on the second."""
    digest = format_key_hash(hash_key("sk-shared-key"))
    text = UPSTREAM + '[[keys]]\nname = "a"\nkey = "sk-shared-key"\n'
    text += f'[[keys]]\nname = "b"\nkey_sha256 = "{digest}"\n'
    assert problems(tmp_path, text) == ["keys[1]: same key as keys[0]"]


def test_key_sha256_accepts_upper_case_hex(tmp_path: Path) -> None:
    """key_sha256 hex digits may be upper case."""
    text = UPSTREAM + f'[[keys]]\nname = "k"\nkey_sha256 = "sha256:{"AB" * 32}"\n'
    assert load_config(write(tmp_path, text), env={}).keys[0].key_sha256 == b"\xab" * 32


def test_port_zero_and_ipv6_bind_are_accepted(tmp_path: Path) -> None:
    """Port 0 (any free port) and a bracketed IPv6 host are valid binds."""
    text = UPSTREAM + '[server]\nbind = "[::]:0"\n'
    assert load_config(write(tmp_path, text), env={}).server.bind == "[::]:0"


def test_unix_redis_url_is_accepted(tmp_path: Path) -> None:
    """A unix:// socket URL is a valid redis.url."""
    text = UPSTREAM + '[redis]\nurl = "unix:///run/redis.sock"\n'
    assert load_config(write(tmp_path, text), env={}).redis == RedisConfig(
        url="unix:///run/redis.sock"
    )


def test_redis_url_problem_does_not_echo_the_password(tmp_path: Path) -> None:
    """A bad redis.url is described without repeating it, since it may hold a password."""
    text = UPSTREAM + '[redis]\nurl = "http://user:hunter2@r:6379"\n'
    assert "hunter2" not in "\n".join(problems(tmp_path, text))


# --- unknown keys, bools, many problems -----------------------------------------------------


def test_unknown_keys_are_rejected_at_every_level(tmp_path: Path) -> None:
    """Unknown keys at the top level, in sections and in array entries are each reported."""
    text = UPSTREAM + 'modles = ["x"]\n[server]\nbindd = "h:1"\n[[keys]]\nname = "k"\n'
    text += f'key_sha256 = "{DIGEST}"\nrps = 1\n[identity]\nx = 1\n'
    assert problems(tmp_path, text) == [
        "server.bindd: unknown key (did you mean 'bind'?)",
        "upstreams[0].modles: unknown key (did you mean 'models'?)",
        "keys[0].rps: unknown key (did you mean 'rpm'?)",
        "identity.x: unknown key",
    ]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("[server]\nworkers = true", "server.workers: expected an integer, got true"),
        ("[redis]\nreplicas = false", "redis.replicas: expected an integer, got false"),
        (
            f'[[keys]]\nname = "k"\nkey_sha256 = "{DIGEST}"\nrpm = true',
            "keys[0].rpm: expected an integer, got true",
        ),
    ],
)
def test_booleans_are_not_integers(tmp_path: Path, extra: str, expected: str) -> None:
    """A TOML boolean where an integer is expected is a problem, not 1 or 0."""
    assert problems(tmp_path, UPSTREAM + extra + "\n") == [expected]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """One load reports the problems of every section together, section by section."""
    text = """
[server]
workers = 0
[[upstreams]]
name = "ok"
base_url = "https://example.com"
[[upstreams]]
name = "x y"
base_url = "ftp://x"
api_key = "env:MISSING_KEY"
[[keys]]
name = "k"
[telemetry]
log_level = "loud"
"""
    assert problems(tmp_path, text) == [
        "server.workers: must be at least 1, got 0",
        "upstreams[1].name: expected 1 to 64 of A-Z a-z 0-9 _ . -, got 'x y'",
        "upstreams[1].base_url: expected an http(s) URL, got 'ftp://x'",
        "upstreams[1].api_key: environment variable MISSING_KEY is not set or empty",
        "keys[0]: set exactly one of 'key' or 'key_sha256'",
        "telemetry.log_level: expected one of 'debug', 'info', 'warning', 'error', got 'loud'",
    ]


def test_garbage_types_never_raise_anything_but_config_error(tmp_path: Path) -> None:
    """Arrays, tables and dates in unexpected places become problems, not tracebacks."""
    text = """
keys = false
[server]
bind = [1]
workers = 1979-05-27
[[upstreams]]
name = { a = 1 }
base_url = 1.5
models = [1, [2]]
[admin]
token = []
"""
    assert problems(tmp_path, text) == [
        "server.bind: expected a string, got an array",
        "server.workers: expected an integer, got a date/time",
        "admin.token: expected a string, got an array",
        "upstreams[0].name: expected a string, got a table",
        "upstreams[0].base_url: expected a string, got 1.5",
        "upstreams[0].models[0]: expected a non-empty string, got 1",
        "upstreams[0].models[1]: expected a non-empty string, got an array",
        "keys: expected an array of tables ([[keys]]), got false",
    ]


# --- env: secrets ---------------------------------------------------------------------------


def test_env_secrets_are_resolved(tmp_path: Path) -> None:
    """api_key, key and admin token written as env:NAME are read from the given env."""
    text = UPSTREAM + 'api_key = "env:UP"\n[admin]\ntoken = "env:ADMIN"\n'
    text += '[[keys]]\nname = "k"\nkey = "env:CLIENT"\n'
    env = {"UP": "sk-up", "ADMIN": "adm", "CLIENT": "sk-client-key"}
    config = load_config(write(tmp_path, text), env=env)
    assert config.upstreams[0].api_key == "sk-up"
    assert config.admin.token == "adm"
    assert config.keys[0].key_sha256 == hash_key("sk-client-key")
    assert config.secrets() == ("sk-up", "adm")


def test_unset_env_secret_is_reported_by_name(tmp_path: Path) -> None:
    """An unset or empty env: variable is a problem naming the path and the variable."""
    text = UPSTREAM + 'api_key = "env:UP"\n[admin]\ntoken = "env:ADMIN"\n'
    assert problems(tmp_path, text, env={"ADMIN": ""}) == [
        "admin.token: environment variable ADMIN is not set or empty",
        "upstreams[0].api_key: environment variable UP is not set or empty",
    ]


def test_bad_env_secret_value_is_reported_without_the_value(tmp_path: Path) -> None:
    """A resolved secret that breaks a rule names the variable, never the value."""
    text = UPSTREAM + '[[keys]]\nname = "k"\nkey = "env:CLIENT"\n'
    assert problems(tmp_path, text, env={"CLIENT": "s3cr"}) == [
        "keys[0].key: must be at least 8 characters (from environment variable CLIENT)"
    ]


def test_env_prefix_needs_a_variable_name(tmp_path: Path) -> None:
    """'env:' followed by something that is not a variable name is a problem."""
    assert problems(tmp_path, UPSTREAM + 'api_key = "env:"\n') == [
        "upstreams[0].api_key: expected env:NAME with a variable name, got 'env:'"
    ]


def test_non_secret_fields_do_not_resolve_env(tmp_path: Path) -> None:
    """env: in a non-secret field is taken literally (and here fails as a URL)."""
    text = '[[upstreams]]\nname = "u"\nbase_url = "env:URL"\n'
    assert problems(tmp_path, text, env={"URL": "http://h"}) == [
        "upstreams[0].base_url: expected an http(s) URL, got 'env:URL'"
    ]


def test_load_config_reads_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an env argument, env: secrets come from os.environ."""
    monkeypatch.setenv("SENTINEL_TEST_UPSTREAM_KEY", "sk-from-os")
    path = write(tmp_path, UPSTREAM + 'api_key = "env:SENTINEL_TEST_UPSTREAM_KEY"\n')
    assert load_config(path).upstreams[0].api_key == "sk-from-os"


# --- resolve_config_path, embedded_config, key hashes ---------------------------------------


def test_cli_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--config beats $SENTINEL_CONFIG and ./sentinel.toml, even when it does not exist."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path, UPSTREAM)
    env = {"SENTINEL_CONFIG": "from-env.toml"}
    assert resolve_config_path("missing.toml", env) == Path("missing.toml")


def test_env_path_beats_local_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$SENTINEL_CONFIG beats ./sentinel.toml."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path, UPSTREAM)
    assert resolve_config_path(None, {"SENTINEL_CONFIG": "from-env.toml"}) == Path("from-env.toml")


def test_local_file_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """./sentinel.toml is used when neither --config nor $SENTINEL_CONFIG is given."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path, UPSTREAM)
    assert resolve_config_path(None, {"SENTINEL_CONFIG": ""}) == Path("sentinel.toml")


def test_no_config_anywhere_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no --config, no $SENTINEL_CONFIG and no ./sentinel.toml the answer is None."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SENTINEL_CONFIG", raising=False)
    assert resolve_config_path(None) is None


def test_embedded_config(tmp_path: Path) -> None:
    """The embedded defaults: one OpenAI upstream with $OPENAI_API_KEY and one dev key."""
    config = embedded_config({"OPENAI_API_KEY": "sk-openai"}, "sk-dev-key")
    assert config == Config(
        upstreams=(
            UpstreamConfig(
                name="openai", base_url="https://api.openai.com/v1", api_key="sk-openai"
            ),
        ),
        keys=(KeyConfig(name="dev", key_sha256=hash_key("sk-dev-key")),),
    )
    assert config.source is None


def test_embedded_config_without_openai_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without $OPENAI_API_KEY the embedded upstream has no api_key; env defaults to os.environ."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert embedded_config(None, "sk-dev-key").upstreams[0].api_key is None


def test_key_hash_round_trip(tmp_path: Path) -> None:
    """format_key_hash(hash_key(k)) written as key_sha256 loads back to hash_key(k)."""
    digest = hash_key("sk-round-trip")
    assert digest == hashlib.sha256(b"sk-round-trip").digest()
    assert format_key_hash(digest) == "sha256:" + digest.hex()
    text = UPSTREAM + f'[[keys]]\nname = "k"\nkey_sha256 = "{format_key_hash(digest)}"\n'
    assert load_config(write(tmp_path, text), env={}).keys[0].key_sha256 == digest
