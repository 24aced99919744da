"""A chatpad profile: one account's folder with its database and saved session.

Profiles live in ``platformdirs.user_data_dir("chatpad")/<name>`` (override the root with
the ``CHATPAD_HOME`` environment variable, e.g. for tests or a portable install). The
folder is 0700 and its files 0600 where the platform has modes (:mod:`chatpad.files`):
the database holds every message, and the session file the token, which is removed on
sign-out; "Remove local data from this computer" (:meth:`Profile.remove_local_data`)
deletes the database too.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import attrs
import platformdirs

from chatpad.files import write_private

__all__ = ["Profile", "Session", "data_root", "parse_server"]

PROFILE_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")



def data_root() -> Path:
    """The folder of the profiles (and of ``chatpad.log``): ``$CHATPAD_HOME``, or the
    platform's user data folder."""
    home = os.environ.get("CHATPAD_HOME")
    return Path(home) if home else Path(platformdirs.user_data_dir("chatpad", False))

@attrs.frozen(kw_only=True)
class Session:
    """A signed-in account: where, who, and the bearer token (never logged)."""

    server: str
    username: str
    token: str = attrs.field(repr=False)
    expires_at: float  # Unix seconds

    @property
    def owner(self) -> str:
        return f"{self.username}@{self.server}"


@attrs.frozen
class Profile:
    folder: Path

    @classmethod
    def named(cls, name: str, root: Path | None = None) -> Profile:
        if PROFILE_NAME_RE.fullmatch(name) is None:
            raise ValueError("a profile name is 1..64 of A-Z a-z 0-9 _ . -")
        if root is None:
            root = data_root()
        return cls(root / name)

    @property
    def database(self) -> Path:
        return self.folder / "chatpad.db"

    @property
    def lock_file(self) -> Path:
        """Held while a chatpad runs with this profile (:mod:`chatpad.lock`)."""
        return self.folder / "chatpad.lock"

    @property
    def session_file(self) -> Path:
        return self.folder / "session.json"

    def load_session(self) -> Session | None:
        try:
            data = json.loads(self.session_file.read_text("utf-8"))
            return Session(server=str(data["server"]), username=str(data["username"]),
                           token=str(data["token"]), expires_at=float(data["expires_at"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save_session(self, session: Session) -> None:
        """Write atomically, readable by the owner only."""
        write_private(self.session_file, json.dumps(attrs.asdict(session)).encode())

    def clear_session(self) -> None:
        self.session_file.unlink(missing_ok=True)

    def local_data_files(self) -> list[Path]:
        """Every file that holds this profile's data: the database (history, outbox,
        search index) with SQLite's side files, and the saved session. Not the lock
        file, which holds nothing and is held while chatpad runs."""
        db = self.database
        names = [db.name + suffix for suffix in ("", "-wal", "-shm", "-journal")]
        tmp = self.session_file.with_suffix(".tmp")
        return [db.with_name(name) for name in names] + [self.session_file, tmp]

    def remove_local_data(self) -> list[Path]:
        """Delete :meth:`local_data_files` (the database must be closed first); return
        the ones that could not be deleted."""
        left = []
        for path in self.local_data_files():
            try:
                path.unlink(missing_ok=True)
            except OSError:
                left.append(path)
        return left


def parse_server(url: str) -> tuple[str, str, int]:
    """``http://host:port`` -> (scheme, host, port). Raises ValueError when unusable."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    scheme, _, rest = text.partition("://")
    scheme = scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError("the server address must start with http:// or https://")
    hostport = rest.split("/", 1)[0]
    if not hostport:
        raise ValueError("the server address needs a host")
    host, sep, port_text = hostport.rpartition(":")
    if not sep or "]" in port_text:
        host, port = hostport, (443 if scheme == "https" else 80)
    else:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError("the port must be a number from 1 to 65535")
        port = int(port_text)
    return scheme, host.strip("[]"), port
