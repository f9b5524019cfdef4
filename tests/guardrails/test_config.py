"""``[[rules]]`` and ``[pii]`` config: RE2 only, named problems, bounded response rules."""

from __future__ import annotations

import importlib
import tomllib
import warnings

import pytest
import re2

from sentinel.config.guardrails import read_guardrails
from sentinel.config.patterns import UNBOUNDED, match_lengths, prefix_pattern
from sentinel.config.table import Table

sre_parse = importlib.import_module("re._parser")  # the same parser, not deprecated


def problems_of(toml: str) -> list[str]:
    problems: list[str] = []
    root = Table(tomllib.loads(toml), "", problems, {})
    read_guardrails(root.tables("rules"), root.table("pii"))
    return problems


def rule(pattern: str, **extra: str) -> str:
    lines = "".join(f'{k} = "{v}"\n' for k, v in extra.items())
    return f'[[rules]]\nname = "r1"\npattern = \'{pattern}\'\naction = "block"\n{lines}'


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        (r"(a)\1", "backreferences are not supported"),
        (r"foo(?=bar)", "lookaround is not supported"),
        (r"(?<!x)foo", "lookaround is not supported"),
        (r"a{2000}", "not valid RE2 syntax"),
        (r"x*", "can match the empty string"),
        (r"\C", "not allowed"),
        ("(" * 101 + "a" + ")" * 101, "groups nest more than 100 deep"),
    ],
)
def test_bad_patterns_are_problems_naming_the_rule(pattern: str, says: str) -> None:
    """RE2 refusals and empty-matching patterns are config errors naming the rule."""
    (problem,) = problems_of(rule(pattern))
    assert problem.startswith("rules[0].pattern: rule 'r1': ")
    assert says in problem


def test_response_rules_need_a_bounded_length() -> None:
    """An unbounded response rule is a problem; the same pattern on requests is fine."""
    assert problems_of(rule(r"secret\d+")) == []
    (problem,) = problems_of(rule(r"secret\d+", direction="response"))
    assert "bounded match length" in problem
    assert problems_of(rule(r"secret\d{1,8}", direction="response")) == []
    with_roles = rule(r"x", direction="response") + 'roles = ["user"]\n'
    assert problems_of(with_roles) == [
        "rules[0].roles: a response rule reads the reply (role assistant): leave roles out"
    ]


def test_other_problems() -> None:
    """Unknown roles, detectors, keys and duplicate names are reported together."""
    toml = (
        rule("a", roles="x").replace('roles = "x"', 'roles = ["robot"]')
        + rule("b")
        + '[pii]\nredact = ["email", "passport"]\nrespones = true\n'
    )
    problems = problems_of(toml)
    assert any("roles[0]" in p for p in problems)
    assert any("duplicate rule name 'r1'" in p for p in problems)
    assert any("pii.redact[1]: unknown detector 'passport'" in p for p in problems)
    assert any("pii.respones: unknown key (did you mean 'responses'?)" in p for p in problems)


@pytest.mark.parametrize(
    "pattern",
    [r"abc", r"a|bcd", r"(?:ab){2,5}c?", r"[a-z]{3}\d{0,4}", r"(x|yy)(z{2})?", r"a+", r"\d*x"],
)
def test_lengths_agree_with_python(pattern: str) -> None:
    """On patterns both engines read alike, the bounds equal sre_parse's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        low, high = sre_parse.parse(pattern).getwidth()
    ours = match_lengths(pattern)
    assert ours[0] == low
    assert ours[1] == high if high < 1 << 31 else ours[1] == UNBOUNDED


@pytest.mark.parametrize(
    ("pattern", "bounds"),
    [
        (r"\pL{3}", (3, 3)),
        (r"[[:alpha:]]{2,3}", (2, 3)),
        (r"\x{41}\b\z", (1, 1)),
        (r"\Qa.b\E", (3, 3)),
    ],
)
def test_lengths_of_re2_only_syntax(pattern: str, bounds: tuple[int, int]) -> None:
    """RE2-only syntax (Unicode and POSIX classes, \\x{..}, \\Q..\\E) is measured right."""
    assert match_lengths(pattern) == bounds


@pytest.mark.parametrize(
    ("pattern", "goes_on", "cannot"),
    [
        (r"Falcon-\d{1,4}", ["", "F", "Falcon-", "Falcon-123"], ["Falcon-1234", "Falx", "alcon"]),
        (r"(?i)\bcorp\.internal\b", ["CORP.int", "corp.internal"], ["corp.internal.", "xcorp"]),
        (r"bye$", ["by", "bye"], ["byes", "ye"]),
        (r"\Qa.b\E{2}", ["a.", "a.b"], ["a.bb", "axb"]),
        (r"(?P<x>ab)(?P<y>c)|(?:d{2}){1,3}", ["ab", "dd", "ddddd"], ["abc", "ac", "dddddd"]),
        (r"[a-c]{2,40}!", ["a" * 39, "b" * 40], ["abc!", "a!b"]),
    ],
)
def test_prefix_patterns(pattern: str, goes_on: list[str], cannot: list[str]) -> None:
    """A prefix pattern takes what a match can begin with and still go on (or what ends on an
    assertion the next character decides), and nothing else."""
    regexp = re2.compile(prefix_pattern(pattern) + r"\z")
    for text in goes_on:
        assert regexp.match(text), text
    for text in cannot:
        assert not regexp.match(text), text
