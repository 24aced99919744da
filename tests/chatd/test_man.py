"""The man pages: they document every flag and command that exists, nothing that does
not, and render without a single groff warning."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatd.cli import build_parser

MAN = Path(__file__).resolve().parents[2] / "man"
PAGES = (MAN / "chatd.8", MAN / "chatpad.1")
_FLAG = re.compile(r"(?<![\w-])(--?[a-z][a-z0-9-]*)")
_ESCAPES = {r"\-": "-", r"\(en": "-", r"\(dq": '"', r"\e": "\\", r"\ ": " "}


def _text(page: Path) -> str:
    """The roff source with the escapes that hide flag names undone."""
    text = page.read_text()
    for escape, plain in _ESCAPES.items():
        text = text.replace(escape, plain)
    return text


def _sections(text: str) -> dict[str, str]:
    """Each ``.SH``/``.SS`` heading (unquoted) -> the source up to the next heading."""
    sections: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        if line.startswith((".SH ", ".SS ")):
            name = line[4:].strip().strip('"')
            sections[name] = ""
        elif name:
            sections[name] += line + "\n"
    return sections


def _synopsis_lines(source: str) -> list[list[str]]:
    """The SYNOPSIS as lines of words: macros dropped, split at ``.br``, ``|`` and
    brackets."""
    lines: list[list[str]] = [[]]
    for line in source.splitlines():
        if line.strip() == ".br":
            lines.append([])
            continue
        if line.startswith("."):
            line = line.partition(" ")[2]
        lines[-1] += re.split(r"[\s|\[\]\"]+", line)
    return [[word for word in line if word] for line in lines]


def _documented_flags(text: str) -> set[str]:
    body = "\n".join(line for line in text.splitlines() if not line.startswith('.\\"'))
    return {flag for flag in _FLAG.findall(body) if flag.startswith("--") or len(flag) == 2}


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {
        option
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for option in action.option_strings
    }


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser of the tree with its command path; () is the top level."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def _leaves(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    commands = dict(_commands(parser))
    return {
        " ".join(path): sub
        for path, sub in commands.items()
        if path and not any(other[: len(path)] == path and other != path for other in commands)
    }


def test_every_chatd_command_has_its_section_with_its_flags() -> None:
    text = _text(MAN / "chatd.8")
    sections = _sections(text)
    common = _documented_flags(sections["COMMON OPTIONS"])
    leaves = _leaves(build_parser())
    assert set(leaves) == {
        "serve", "user add", "user list", "user show", "user disable", "user enable",
        "user passwd", "token issue", "key rotate", "messages", "stats", "limits show",
        "limits clear", "health", "migrate",
        "backup", "migrate-data",
    }
    synopsis = _synopsis_lines(sections["SYNOPSIS"])
    commands_section = text.split(".SH COMMANDS", 1)[1].split("\n.SH ", 1)[0]
    documented_commands = set(_sections(".SH X\n" + commands_section)) - {"X"}
    assert documented_commands == set(leaves)  # a section per command, and no other
    for name, sub in leaves.items():
        missing = _flags(sub) - _documented_flags(sections[name]) - common
        assert not missing, f"chatd {name}: flags not in its section of chatd.8: {missing}"
        words = name.split()
        assert any(
            line[:2] == ["chatd", words[0]] and set(words[1:]) <= set(line)
            for line in synopsis
        ), f"chatd {name} is not in the SYNOPSIS"


def test_chatd_man_page_documents_only_real_flags() -> None:
    every = set().union(*(_flags(sub) for _, sub in _commands(build_parser())))
    documented = _documented_flags(_text(MAN / "chatd.8"))
    assert documented - every == set(), "chatd.8 documents flags chatd does not have"
    assert every - documented == set(), "chatd has flags chatd.8 does not document"


def test_chatpad_man_page_matches_its_parser() -> None:
    chatpad_main = pytest.importorskip("chatpad.__main__")
    flags = _flags(chatpad_main.build_parser())
    text = _text(MAN / "chatpad.1")
    documented = _documented_flags(text)
    assert flags == documented
    options = _documented_flags(_sections(text)["OPTIONS"])
    assert flags == options


def _groff() -> str:
    groff = shutil.which("groff")
    if groff is None:
        if os.environ.get("CI") == "true":
            pytest.fail("groff is missing: CI must install it (make man-deps)")
        pytest.skip("groff is not installed (make man-deps installs it)")
    return groff


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_man_page_renders_without_warnings(page: Path) -> None:
    done = subprocess.run(
        [_groff(), "-man", "-ww", "-z", str(page)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0
    assert done.stderr == "", done.stderr
