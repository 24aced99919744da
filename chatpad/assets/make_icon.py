"""Draw chatpad's icon: ``python chatpad/assets/make_icon.py`` rewrites ``chatpad.png``
(256 px, the window icon) and ``chatpad.ico`` (the Windows executable's icon) beside it.

Run once; both results are committed. The picture is a white speech bubble with three
dots on a rounded square of the accent blue (``Colors.ACCENT``), drawn four times larger
and scaled down smoothly so its edges are antialiased. The .ico holds one PNG per size
(Windows Vista and later read PNG entries), so no image library is needed.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame

HERE = Path(__file__).resolve().parent
ACCENT = (0x2B, 0x6C, 0xF6)
WHITE = (255, 255, 255)
SIZES = (16, 24, 32, 48, 64, 128, 256)  # what Windows asks an .ico for
SCALE = 4  # drawn at 4x, then smoothscaled: antialiased edges


def draw(size: int) -> pygame.Surface:
    big = size * SCALE
    art = pygame.Surface((big, big), pygame.SRCALPHA)

    def px(fraction: float) -> int:
        return round(fraction * big)

    pygame.draw.rect(art, ACCENT, (0, 0, big, big), border_radius=px(0.22))
    bubble = pygame.Rect(px(0.16), px(0.2), px(0.68), px(0.46))
    pygame.draw.rect(art, WHITE, bubble, border_radius=px(0.16))
    pygame.draw.polygon(art, WHITE, [(px(0.28), px(0.6)), (px(0.48), px(0.6)),
                                     (px(0.24), px(0.82))])  # the bubble's tail
    for x in (0.34, 0.5, 0.66):
        pygame.draw.circle(art, ACCENT, (px(x), px(0.43)), px(0.055))
    return pygame.transform.smoothscale(art, (size, size))


def png_bytes(surface: pygame.Surface) -> bytes:
    buffer = io.BytesIO()
    pygame.image.save(surface, buffer, "icon.png")
    return buffer.getvalue()


def ico_bytes(pngs: dict[int, bytes]) -> bytes:
    """An ICONDIR, one ICONDIRENTRY per size, then the PNG data (sizes of 256 are 0)."""
    header = struct.pack("<HHH", 0, 1, len(pngs))
    offset = len(header) + 16 * len(pngs)
    entries, data = b"", b""
    for size, png in pngs.items():
        side = size % 256
        entries += struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(png), offset)
        offset += len(png)
        data += png
    return header + entries + data


def main() -> None:
    pngs = {size: png_bytes(draw(size)) for size in SIZES}
    (HERE / "chatpad.png").write_bytes(pngs[256])
    (HERE / "chatpad.ico").write_bytes(ico_bytes(pngs))


if __name__ == "__main__":
    main()
