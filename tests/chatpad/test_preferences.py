"""The preferences file: defaults when missing or damaged, values kept in bounds, written
privately and atomically."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from chatpad.__main__ import build_parser
from chatpad.appearance import WIDGET_MAX_SCALE, widget_theme
from chatpad.preferences import FONT_SCALES, Preferences, preferences_file


def test_missing_damaged_or_odd_files_give_defaults(tmp_path: Path) -> None:
    path = preferences_file(tmp_path)
    assert Preferences.load(path) == Preferences()
    assert Preferences.load(None) == Preferences(theme="system", font_scale=1.0)
    path.write_text("{not json")
    assert Preferences.load(path) == Preferences()
    path.write_text("[1, 2]")
    assert Preferences.load(path) == Preferences()
    path.write_text(json.dumps({"theme": "purple", "font_scale": 9}))
    assert Preferences.load(path) == Preferences(theme="system", font_scale=2.0)
    path.write_text(json.dumps({"theme": "dark", "font_scale": "big"}))
    assert Preferences.load(path) == Preferences(theme="dark", font_scale=1.0)


def test_zoom_steps_stay_in_bounds() -> None:
    prefs = Preferences()
    assert prefs.zoomed(1).font_scale == 1.1
    assert prefs.zoomed(-1).font_scale == 0.9
    assert prefs.zoomed(100).font_scale == max(FONT_SCALES) == 2.0
    assert prefs.zoomed(-100).font_scale == min(FONT_SCALES) == 0.8
    assert prefs.zoomed(3).zoomed(0).font_scale == 1.0


def test_saved_privately_and_atomically(tmp_path: Path) -> None:
    path = preferences_file(tmp_path / "new-profile")
    Preferences(theme="dark", font_scale=1.5).save(path)
    assert Preferences.load(path) == Preferences(theme="dark", font_scale=1.5)
    assert not path.with_suffix(".tmp").exists()
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    Preferences().save(None)  # in memory only: nothing happens


def test_theme_option() -> None:
    parser = build_parser()
    assert parser.parse_args(["--theme", "dark"]).theme == "dark"
    assert parser.parse_args([]).theme is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--theme", "purple"])


def test_dark_widget_theme_mirrors_the_light_one() -> None:
    light, dark = widget_theme(False), widget_theme(True)
    assert light.keys() == dark.keys()
    for name in light:
        assert light[name].keys() == dark[name].keys(), name
        for part in ("colours", "font", "misc"):
            assert light[name].get(part, {}).keys() == dark[name].get(part, {}).keys(), name
    assert light["defaults"]["colours"]["dark_bg"] != dark["defaults"]["colours"]["dark_bg"]


def test_widget_fonts_scale_up_to_their_cap() -> None:
    assert widget_theme(False, 1.1)["defaults"]["font"]["size"] == str(round(16 * 1.1))
    big = widget_theme(False, 2.0)
    assert big["button"]["font"]["size"] == str(round(15 * WIDGET_MAX_SCALE))
    assert big["@title"]["font"]["size"] == "24"  # labels sit in boxes cut to their text
    assert widget_theme(False)["button"]["font"]["size"] == "15"  # the file is untouched


def test_every_key_the_help_lists_is_in_the_man_page() -> None:
    from chatpad.ui.help import SHORTCUTS

    man = (Path(__file__).resolve().parents[2] / "man" / "chatpad.1").read_text("utf-8")
    keys_section = man[man.index(".SH KEYS"):man.index(".SH ENVIRONMENT")].replace("\\-", "-")
    for keys, _ in SHORTCUTS:
        for key in keys.split(" / "):
            assert key in keys_section, key
