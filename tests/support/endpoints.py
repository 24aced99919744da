"""The HTTP endpoints ``protocol/PROTOCOL.md`` documents, read from its headings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

PROTOCOL_MD: Final = Path(__file__).resolve().parents[2] / "protocol" / "PROTOCOL.md"
# A heading that names an endpoint: "#### `POST /v1/login`", "### 5.3 `GET /v1/users?...`"
_HEADING_RE: Final = re.compile(r"^#{2,4} [^`\n]*`(GET|POST) (/[^`?\s]*)", re.MULTILINE)


def documented_endpoints() -> set[tuple[str, bytes]]:
    """(path template, method) of every endpoint with a heading; ``<peer>`` in the
    document is written ``{peer}``, as router templates write it."""
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    return {
        (re.sub(r"<(\w+)>", r"{\1}", path), method.encode())
        for method, path in _HEADING_RE.findall(text)
    }
