"""Light or dark, and how large: what the system prefers, and pygame_gui's theme at a
text scale.

The hand-drawn parts take their colours from :class:`chatpad.ui.style.Colors` and their
fonts from :class:`chatpad.ui.style.Styles`; the widgets from ``theme.json`` or
``theme-dark.json``, whose font sizes are scaled here before pygame_gui loads them.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import subprocess
import sys
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = ["SCALED_WIDGETS", "WIDGET_MAX_SCALE", "is_dark", "preload_widget_fonts",
           "system_prefers_dark", "widget_theme", "widget_theme_path"]

log = logging.getLogger(__name__)

# Form controls keep their pixel boxes, so their text grows to 125 % at most; the
# conversation, the list and the help (drawn by hand) follow the whole range. Labels
# (titles, hints) sit in boxes cut to their text and keep their size.
WIDGET_MAX_SCALE = 1.25
SCALED_WIDGETS = frozenset({"defaults", "button", "text_entry_line", "text_entry_box"})
GSETTINGS_TIMEOUT = 0.5  # seconds: asked once at start, never worth a slow start
_PERSONALIZE = r"Software\Microsoft\Windows\CurrentVersion\Themes\Personalize"


def system_prefers_dark() -> bool:
    """Whether the desktop asks for dark apps, where that can be read cheaply: the
    Windows setting "Choose your app mode"; on Linux ``GTK_THEME=...:dark`` or GNOME's
    ``color-scheme``. Anything else (or any failure): light."""
    if sys.platform == "win32":
        return _windows_prefers_dark()
    theme = os.environ.get("GTK_THEME", "")
    if theme:
        return theme.lower().endswith(":dark")
    return _gnome_prefers_dark()


def _windows_prefers_dark() -> bool:
    if sys.platform != "win32":  # also tells type checkers where winreg exists
        return False
    try:
        import winreg  # Windows only; imported here so chatpad imports anywhere

        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, _PERSONALIZE) as key:
            value, _ = winreg.QueryValueEx(key, "AppsUseLightTheme")
    except (ImportError, OSError):
        return False
    return bool(value == 0)


def _gnome_prefers_dark() -> bool:
    gsettings = shutil.which("gsettings")
    if gsettings is None:
        return False
    try:
        out = subprocess.run(
            [gsettings, "get", "org.gnome.desktop.interface", "color-scheme"],
            capture_output=True, text=True, timeout=GSETTINGS_TIMEOUT, check=False).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("gsettings: %s", exc)
        return False
    return "dark" in out


def is_dark(theme: str) -> bool:
    """Whether the preference ``theme`` (light, dark or system) means dark now."""
    if theme == "system":
        return system_prefers_dark()
    return theme == "dark"


def widget_theme_path(dark: bool) -> str:
    return str(resources.files("chatpad") / ("theme-dark.json" if dark else "theme.json"))


@lru_cache(maxsize=2)
def _widget_theme_file(dark: bool) -> dict[str, Any]:
    with open(widget_theme_path(dark), encoding="utf-8") as file:
        data: dict[str, Any] = json.load(file)
    return data


def widget_theme(dark: bool, scale: float = 1.0) -> dict[str, Any]:
    """pygame_gui's theme, with the font sizes of buttons and text fields times ``scale``
    (capped at :data:`WIDGET_MAX_SCALE`): a fresh dict to hand to ``UIManager``."""
    data = copy.deepcopy(_widget_theme_file(dark))
    factor = min(scale, WIDGET_MAX_SCALE)
    for name in SCALED_WIDGETS & data.keys():
        font = data[name].get("font")
        if isinstance(font, dict) and "size" in font:
            font["size"] = str(max(6, round(int(font["size"]) * factor)))
    return data


def preload_widget_fonts(font_dict: Any, *themes: dict[str, Any]) -> None:
    """Load the fonts the ``themes`` name, regular and bold, into pygame_gui's font
    dictionary ``font_dict`` now: pygame_gui warns about any it has to load on the fly
    (and while switching, widgets still ask once for their old theme's sizes)."""
    sizes = {int(element["font"]["size"]) for theme in themes for element in theme.values()
             if isinstance(element, dict) and "size" in element.get("font", {})}
    for size in sorted(sizes):
        for bold in (False, True):
            if font_dict.create_font_id(size, "noto_sans", bold, False) not in (
                    font_dict.loaded_fonts):
                font_dict.preload_font(size, "noto_sans", bold=bold)
