"""chatd's one frozen Config, built from command-line flags and an optional TOML file.

Precedence: a flag given on the command line beats the TOML file, which beats the
default. The TOML file uses the flags' long names with underscores
(``max_connections = 5000``, ``allowed_origin = ["https://chat.example"]``).
"""

from __future__ import annotations

import argparse
import ipaddress
import tomllib
from pathlib import Path
from typing import Any

import attrs


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
    """Merge defaults, the TOML file named by ``--config`` and the flags."""
    values: dict[str, Any] = {}
    config_file = getattr(args, "config", None)
    if config_file is not None:
        values.update(_read_toml(Path(config_file)))
    for name in _FIELDS:
        flag = getattr(args, name, None)
        if flag is not None:
            values[name] = flag
    return _build(values)


def _read_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as file:
        raw = tomllib.load(file)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = _TOML_ALIASES.get(key, key.replace("-", "_"))
        if name is None:
            values["presence"] = not value
            continue
        if name not in _FIELDS:
            raise ValueError(f"{path}: unknown setting {key!r}")
        values[name] = value
    return values


def _build(values: dict[str, Any]) -> Config:
    for name in ("data_dir", "log_dir", "tls_cert", "tls_key", "token_key_file"):
        if values.get(name) is not None:
            values[name] = Path(values[name])
    for name in ("allowed_origins", "trusted_ips"):
        if name in values:
            listed = values[name]
            values[name] = (listed,) if isinstance(listed, str) else tuple(listed)
    config = Config(**values)
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    for entry in config.trusted_ips:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"--trusted-ip {entry!r} is not an address or network") from None
    if config.metrics_listen is not None:
        _, colon, port = config.metrics_listen.rpartition(":")
        if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"--metrics-listen {config.metrics_listen!r} is not ADDR:PORT")
    budgets = {
        "--max-connections": config.max_connections,
        "--max-anonymous": config.anonymous_cap,
        "--max-anonymous-per-ip": config.max_anonymous_per_ip,
        "--max-connections-per-user": config.max_connections_per_user,
    }
    for flag, value in budgets.items():
        if value < 1:
            raise ValueError(f"{flag} must be at least 1")
    if not config.refresh_grace >= 0:
        raise ValueError("--refresh-grace must be 0 or more seconds")
    return config
