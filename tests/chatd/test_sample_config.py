"""contrib/chatd.toml, the sample configuration: it names every setting the loader
knows, each commented-out one is valid once uncommented, the active ones are the
defaults (but for the production paths), and chatd serves with it."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import attrs

from chatd.config import _FIELDS, _TOML_ALIASES, Config, load_config
from tests.chatd.clients import http
from tests.chatd.server import ChatdProcess

SAMPLE = Path(__file__).resolve().parents[2] / "contrib" / "chatd.toml"
_SETTING = re.compile(r"^(# )?([a-z_]+) = ", re.MULTILINE)


def _setting(key: str) -> str:
    """The Config field a key of the file sets (``no_presence`` sets ``presence``)."""
    return _TOML_ALIASES.get(key) or ("presence" if key == "no_presence" else key)


def test_the_sample_names_every_setting_once() -> None:
    keys = [key for _, key in _SETTING.findall(SAMPLE.read_text())]
    named = [_setting(key) for key in keys]
    assert sorted(named) == sorted(_FIELDS), "contrib/chatd.toml must name every setting once"
    assert all(key in _FIELDS or key in _TOML_ALIASES for key in keys)


def test_the_sample_is_valid_with_every_setting_uncommented(tmp_path: Path) -> None:
    uncommented = tmp_path / "chatd.toml"
    uncommented.write_text(re.sub(r"^# ([a-z_]+ = )", r"\1", SAMPLE.read_text(),
                                  flags=re.MULTILINE))
    config = load_config(argparse.Namespace(config=uncommented))
    unset = [field.name for field in attrs.fields(Config)
             if field.default is None and getattr(config, field.name) is None]
    assert unset == []


def test_the_active_settings_are_the_defaults_but_the_paths() -> None:
    config = load_config(argparse.Namespace(config=SAMPLE))
    assert config == Config(data_dir=Path("/var/lib/chatd"), log_dir=Path("/var/log/chatd"))


def test_chatd_serves_with_the_sample(tmp_path: Path) -> None:
    # Only the paths and the port change (flags beat the file); everything else is the
    # sample's.
    process = ChatdProcess(tmp_path / "data", tmp_path / "logs", "--config", str(SAMPLE))
    with process:
        response = http(process, "GET", "/healthz")
        assert response.status == 200, response
        assert process.stop() == 0
