"""A profile's preferences: the theme (light, dark, or the system's) and the text size.

Kept in ``preferences.json`` in the profile folder, written atomically with mode 0600
like the session file. A missing or damaged file gives the defaults: preferences are
never worth refusing to start over.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Final

import attrs

from chatpad.files import write_private

__all__ = ["FONT_SCALES", "THEMES", "Preferences", "preferences_file"]

log = logging.getLogger(__name__)

THEMES: Final = ("light", "dark", "system")
# the text sizes Ctrl + and Ctrl - step through: 80 % still reads, 200 % still lays out
FONT_SCALES: Final = (0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0)


def _theme(value: object) -> str:
    return value if isinstance(value, str) and value in THEMES else "system"


def _scale(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 1.0
    return min(FONT_SCALES, key=lambda step: abs(step - float(value)))


@attrs.frozen(kw_only=True)
class Preferences:
    theme: str = attrs.field(default="system", converter=_theme)
    font_scale: float = attrs.field(default=1.0, converter=_scale)

    def zoomed(self, steps: int) -> Preferences:
        """``steps`` sizes larger (or smaller when negative) within :data:`FONT_SCALES`;
        0 is the normal size."""
        if steps == 0:
            return attrs.evolve(self, font_scale=1.0)
        index = FONT_SCALES.index(self.font_scale) + steps
        return attrs.evolve(self, font_scale=FONT_SCALES[max(0, min(len(FONT_SCALES) - 1,
                                                                     index))])

    @classmethod
    def load(cls, path: Path | None) -> Preferences:
        if path is None:
            return cls()
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable (%s): the defaults are used", path, exc)
            return cls()
        if not isinstance(data, dict):
            return cls()
        return cls(theme=data.get("theme"), font_scale=data.get("font_scale", 1.0))

    def save(self, path: Path | None) -> None:
        """Write atomically, readable by the owner only; None: kept in memory only."""
        if path is None:
            return
        write_private(path, json.dumps(attrs.asdict(self), indent=2).encode())


def preferences_file(profile_folder: Path) -> Path:
    return profile_folder / "preferences.json"
