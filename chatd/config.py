"""chatd's one frozen Config, built from command-line flags and an optional TOML file.

Precedence: a flag given on the command line beats the TOML file, which beats the
default. The TOML file uses the flags' long names with underscores
(``max_connections = 5000``, ``allowed_origin = ["https://chat.example"]``).
"""

from __future__ import annotations

import argparse
import ipaddress
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any, Final

import attrs

from chatd.store.factory import check_db_url

# Where a packaged install keeps the server's settings: the admin commands read it when
# neither --config nor --data-dir/--db says where the server is (chatd serve reads only
# the file --config names).
DEFAULT_CONFIG_FILE: Final = Path("/etc/chatd/chatd.toml")
# What the admin commands take from the server's file: where its data, database, log
# and token keys are.
ADMIN_SETTINGS: Final = ("data_dir", "db", "log_dir", "token_key_file")


@attrs.frozen(kw_only=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8765
    data_dir: Path = Path("data")
    db: str | None = None  # a URL; None means the SQLite file in data_dir
    log_dir: Path = Path("logs")
    log_stderr: bool = False
    log_keep_days: int = 30
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token_ttl: int = 86400  # seconds a token lives
    max_connections: int = 20000  # every socket counts; beyond it new ones get 503
    max_anonymous: int | None = None  # sockets before hello, in all; None: see anonymous_cap
    max_anonymous_per_ip: int = 32  # sockets before hello from one address (IPv6: one /64)
    max_connections_per_user: int = 10  # one user's WebSockets: their devices
    trusted_ips: tuple[str, ...] = ("127.0.0.1", "::1")  # exempt from per-address budgets
    registration: str = "open"  # open, or closed: accounts come from `chatd user add` only
    metrics_listen: str | None = None  # ADDR:PORT serving /metrics instead of the chat port
    sync: str = "full"  # SQLite durability: full or normal
    presence: bool = True
    allowed_origins: tuple[str, ...] = ()  # with none, any upgrade carrying Origin is refused
    send_rate: float = 20.0  # messages per second per user, sustained
    send_burst: int = 40  # messages a user may send at once
    max_queue: int | None = None  # cap on a recipient's undelivered messages
    disk_alert_pct: float = 80.0
    reuse_port: bool = False
    backlog: int = 16384  # listen backlog: a reconnect storm must not overflow it
    slow_reader_timeout: float = 10.0  # seconds a paused (full) socket may stay paused
    refresh_grace: float = 60.0  # seconds a token retired by a rotating refresh still works
    token_key_file: Path | None = None  # the token keyring; None: data dir or database
    sentry_dsn: str | None = None  # send error events to Sentry (sentry-sdk must be installed)

    @property
    def db_url(self) -> str:
        return self.db or str(self.data_dir / "chatd.db")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def anonymous_cap(self) -> int:
        """Anonymous sockets allowed in all: well below ``max_connections``, so signed-in
        users always find room. By default a tenth of it, or on a small server half of it
        up to 100."""
        if self.max_anonymous is not None:
            return self.max_anonymous
        return max(self.max_connections // 10, min(self.max_connections // 2, 100), 1)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """``--metrics-listen`` as (host, port); IPv6 hosts in brackets: ``[::1]:9100``."""
        if self.metrics_listen is None:
            return None
        host, _, port = self.metrics_listen.rpartition(":")
        return host.strip("[]"), int(port)


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of ``chatd serve``. Defaults are None so that a TOML file can fill in
    what the command line leaves out."""
    add = parser.add_argument
    add("--config", type=Path, metavar="FILE", help="TOML file holding these settings")
    add("--host", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, help="TCP port (default 8765; 0 picks a free one)")
    add("--log-dir", type=Path, metavar="DIR", help="where chatd.log goes (default ./logs)")
    add("--log-stderr", action="store_true", default=None, help="also log to stderr")
    add("--log-keep-days", type=int, metavar="N", help="daily log files kept (default 30)")
    add("--tls-cert", type=Path, metavar="FILE", help="PEM certificate: serve HTTPS/WSS")
    add("--tls-key", type=Path, metavar="FILE", help="PEM private key for --tls-cert")
    add("--token-ttl", type=int, metavar="SECONDS", help="token lifetime (default 86400)")
    add("--max-connections", type=int, metavar="N",
        help="cap on open sockets, every kind (default 20000)")
    add("--max-anonymous", type=int, metavar="N",
        help="cap on sockets that have not said hello (default: a tenth of --max-connections)")
    add("--max-anonymous-per-ip", type=int, metavar="N",
        help="cap on sockets before hello from one address or IPv6 /64 (default 32)")
    add("--max-connections-per-user", type=int, metavar="N",
        help="cap on one user's WebSockets (default 10)")
    add("--trusted-ip", dest="trusted_ips", action="append", metavar="ADDR",
        help="address or network exempt from per-address budgets (repeatable;"
             " default 127.0.0.1 and ::1)")
    add("--registration", choices=["open", "closed"],
        help="open (default), or closed: only `chatd user add` creates accounts")
    add("--metrics-listen", metavar="ADDR:PORT",
        help="serve /metrics on this address instead of the chat port")
    add("--sync", choices=["full", "normal"], help="SQLite durability (default full)")
    add("--no-presence", dest="presence", action="store_false", default=None,
        help="do not push presence")
    add("--allowed-origin", dest="allowed_origins", action="append", metavar="ORIGIN",
        help="allow WebSocket upgrades from this Origin (repeatable)")
    add("--send-rate", type=float, metavar="PER_S", help="per-user send rate (default 20)")
    add("--send-burst", type=int, metavar="N", help="per-user send burst (default 40)")
    add("--max-queue", type=int, metavar="N", help="cap on a recipient's undelivered queue")
    add("--disk-alert-pct", type=float, metavar="PCT", help="degraded at this disk use (80)")
    add("--reuse-port", action="store_true", default=None,
        help="share the port with other chatd processes (SO_REUSEPORT)")
    add("--backlog", type=int, metavar="N", help="listen backlog (default 16384)")
    add("--refresh-grace", type=float, metavar="SECONDS",
        help="a token retired by a rotating refresh works this long more (default 60)")
    add("--token-key-file", type=Path, metavar="FILE",
        help="read the token keyring from FILE, not the data dir or database")
    add("--sentry-dsn", metavar="DSN",
        help="send error events to Sentry at DSN (needs sentry-sdk: the sentry extra)")


def add_store_flags(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` and ``--db``: every subcommand that touches the database has them."""
    parser.add_argument("--data-dir", type=Path, metavar="DIR",
                        help="database and token key (default ./data)")
    parser.add_argument("--db", metavar="URL",
                        help="database URL (default: the SQLite file in the data dir)")


_FIELDS = {field.name for field in attrs.fields(Config)}
_TOML_ALIASES = {
    "allowed_origin": "allowed_origins",
    "trusted_ip": "trusted_ips",
    "no_presence": None,
}


def load_config(args: argparse.Namespace) -> Config:
    """Merge defaults, the TOML file named by ``--config`` and the flags, and check every
    setting before anything is created. Raises ValueError with one line naming the
    setting (its flag, and its key and file when it came from the TOML file)."""
    values: dict[str, Any] = {}
    config_file = getattr(args, "config", None)
    from_file: dict[str, str] = {}  # setting -> "key in FILE", for the messages
    if config_file is not None:
        path = Path(config_file)
        for name, (key, value) in _read_toml(path).items():
            values[name] = value
            from_file[name] = f"{key} in {path}"
    for name in _FIELDS:
        flag = getattr(args, name, None)
        if flag is not None:
            values[name] = flag
            from_file.pop(name, None)
    return _build(values, from_file)


def apply_server_config(args: argparse.Namespace) -> Path | None:
    """For the admin commands: fill ``--data-dir``, ``--db``, ``--log-dir`` and
    ``--token-key-file`` left out on the command line from the server's TOML file (the
    one ``--config`` names, else :data:`DEFAULT_CONFIG_FILE` when it exists and neither
    ``--data-dir`` nor ``--db`` is given), so they work on the server's database and
    audit beside its log. The whole file is checked as ``serve`` checks it.

    Returns:
        The file read, or None.

    Raises:
        ValueError: the file cannot be read or holds a bad setting (one line).
    """
    path: Path | None = getattr(args, "config", None)
    if path is None and getattr(args, "data_dir", None) is None and (
        getattr(args, "db", None) is None
    ) and DEFAULT_CONFIG_FILE.is_file():
        path = DEFAULT_CONFIG_FILE
    if path is None:
        return None
    server = argparse.Namespace(config=path)
    for name in ADMIN_SETTINGS:
        setattr(server, name, getattr(args, name, None))
    config = load_config(server)
    for name in ADMIN_SETTINGS:
        if getattr(args, name, None) is None:
            setattr(args, name, getattr(config, name))
    return path


def _read_toml(path: Path) -> dict[str, tuple[str, Any]]:
    """Each setting of the file: its name, the key it was given as, and its value."""
    try:
        with path.open("rb") as file:
            raw = tomllib.load(file)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    values: dict[str, tuple[str, Any]] = {}
    for key, value in raw.items():
        name = _TOML_ALIASES.get(key, key.replace("-", "_"))
        if name is None:
            if not isinstance(value, bool):
                raise ValueError(f"{path}: {key} must be true or false, not {value!r}")
            values["presence"] = (key, not value)
            continue
        if name not in _FIELDS:
            raise ValueError(f"{path}: unknown setting {key!r}")
        values[name] = (key, value)
    return values


# What each setting must be: its kind, and the values it may take.
_INTS: Final = {
    "port": (0, 65535),
    "log_keep_days": (0, 100_000),
    "token_ttl": (1, 10 * 365 * 86400),
    "max_connections": (1, 10_000_000),
    "max_anonymous": (1, 10_000_000),
    "max_anonymous_per_ip": (1, 10_000_000),
    "max_connections_per_user": (1, 1_000_000),
    "send_burst": (1, 1_000_000),
    "max_queue": (1, 2**62),
    "backlog": (1, 1_000_000),
}
_FLOATS: Final = {
    "send_rate": (0.001, 1_000_000.0),
    "disk_alert_pct": (0.0, 100.0),
    "slow_reader_timeout": (0.1, 86400.0),
    "refresh_grace": (0.0, 86400.0),
}
_CHOICES: Final = {"sync": ("full", "normal"), "registration": ("open", "closed")}
_BOOLS: Final = ("log_stderr", "presence", "reuse_port")
_STRINGS: Final = ("host", "db", "metrics_listen", "sentry_dsn")
_PATHS: Final = ("data_dir", "log_dir", "tls_cert", "tls_key", "token_key_file")
_LISTS: Final = ("allowed_origins", "trusted_ips")


def _build(values: dict[str, Any], from_file: dict[str, str] | None = None) -> Config:
    from_file = from_file or {}

    def where(name: str) -> str:
        flag = "--" + name.replace("_", "-")
        origin = from_file.get(name)
        return flag if origin is None else f"{flag} ({origin})"

    for name, value in list(values.items()):
        if value is None:
            continue
        values[name] = _checked(name, value, where(name))
    config = Config(**values)
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    for entry in config.trusted_ips:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(
                f"{where('trusted_ips')}: {entry!r} is not an address or network"
            ) from None
    if config.metrics_listen is not None:
        _, colon, port = config.metrics_listen.rpartition(":")
        if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
            listen = config.metrics_listen
            raise ValueError(f"{where('metrics_listen')}: {listen!r} is not ADDR:PORT")
    if config.sentry_dsn is not None and not _is_dsn(config.sentry_dsn):
        # The DSN holds the project's key: not repeated in the message.
        raise ValueError(f"{where('sentry_dsn')} is not a DSN like https://KEY@HOST/PROJECT")
    if config.db is not None:
        try:
            check_db_url(config.db)
        except ValueError as exc:
            raise ValueError(f"{where('db')}: {exc}") from None
    return config


def _is_dsn(dsn: str) -> bool:
    parts = urllib.parse.urlsplit(dsn)
    return (parts.scheme in ("http", "https") and bool(parts.username)
            and bool(parts.hostname) and parts.path.strip("/") != "")


def _checked(name: str, value: Any, where: str) -> Any:
    """``value`` as setting ``name`` holds it, or ValueError saying what it must be."""
    if name in _INTS:
        low, high = _INTS[name]
        if type(value) is not int or not low <= value <= high:
            raise ValueError(f"{where} must be a whole number from {low} to {high}, not {value!r}")
        return value
    if name in _FLOATS:
        low_f, high_f = _FLOATS[name]
        if type(value) not in (int, float) or not low_f <= value <= high_f:
            raise ValueError(f"{where} must be a number from {low_f} to {high_f}, not {value!r}")
        return float(value)
    if name in _CHOICES:
        if value not in _CHOICES[name]:
            raise ValueError(f"{where} must be one of {', '.join(_CHOICES[name])}, not {value!r}")
        return value
    if name in _BOOLS:
        if type(value) is not bool:
            raise ValueError(f"{where} must be true or false, not {value!r}")
        return value
    if name in _STRINGS:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where} must be a non-empty string, not {value!r}")
        return value
    if name in _PATHS:
        if not isinstance(value, str | Path) or not str(value):
            raise ValueError(f"{where} must be a path, not {value!r}")
        return Path(value)
    if name in _LISTS:
        listed = (value,) if isinstance(value, str) else value
        if not isinstance(listed, list | tuple) or not all(
            isinstance(item, str) and item for item in listed
        ):
            raise ValueError(f"{where} must be a string or a list of strings, not {value!r}")
        return tuple(listed)
    raise AssertionError(f"setting {name} has no rule")  # pragma: no cover
