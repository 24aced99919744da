"""Authentication: the token keyring and where it lives, argon2id passwords, JWTs, login
limits, revocations.

Blocking work (argon2) runs in an executor handed in, never on the event loop. Time is
passed in (``now``, Unix seconds) so every rule here is testable with a fake clock. Nothing
in this package logs a password, a hash or a token.

- :mod:`chatd.auth.keyring`: the signing keys and their JSON document;
- :mod:`chatd.auth.keys`: where the keyring is kept (a key file or the database);
- :mod:`chatd.auth.passwords`: argon2id hashing in an executor, with a bounded queue;
- :mod:`chatd.auth.tokens`: issuing and checking JWTs, reloading the keyring;
- :mod:`chatd.auth.loginlimits`: failed logins per address, the line per account;
- :mod:`chatd.auth.revocations`: tokens that died before their expiry.
"""

from chatd.auth.keyring import IAT_SKEW, KEY_BYTES, KeyFileError, Keyring, SigningKey
from chatd.auth.keys import KEY_FILE, KeySource, key_source, load_or_create_key
from chatd.auth.loginlimits import (
    LOGIN_MAX_FAILURES,
    LOGIN_WINDOW,
    FailureLog,
    LoginAdmission,
    LoginLimiter,
    LoginTicket,
)
from chatd.auth.passwords import OWASP_FLOOR, HashParams, Passwords, PasswordsBusy
from chatd.auth.revocations import RevocationCache
from chatd.auth.tokens import Claims, InvalidToken, IssuedToken, KeyringLoader, Tokens, UnknownKey

__all__ = [
    "IAT_SKEW",
    "KEY_BYTES",
    "KEY_FILE",
    "LOGIN_MAX_FAILURES",
    "LOGIN_WINDOW",
    "OWASP_FLOOR",
    "Claims",
    "FailureLog",
    "HashParams",
    "InvalidToken",
    "IssuedToken",
    "KeyFileError",
    "KeySource",
    "Keyring",
    "KeyringLoader",
    "LoginAdmission",
    "LoginLimiter",
    "LoginTicket",
    "Passwords",
    "PasswordsBusy",
    "RevocationCache",
    "SigningKey",
    "Tokens",
    "UnknownKey",
    "key_source",
    "load_or_create_key",
]
