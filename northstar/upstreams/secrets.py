"""Upstream secrets: sealed at rest, substituted into the connection only, scrubbed from text.

Sealing
    :class:`SecretBox` encrypts a secrets mapping with AES-256-GCM. The key lives outside the
    database, in a key file (``NORTHSTAR_SECRETS_KEY_FILE``, else ``<data_dir>/secrets.key``):
    32 random bytes, URL-safe base64, mode 0600, created on first use. Two processes racing
    to create it agree on one key: each writes a private temporary file and links it into
    place, and the loser reads the winner's. A sealed value names its key (``kid``: a hash
    of the key) and is bound to its upstream (the name is the AEAD associated data), so a
    wrong key file or a blob copied to another upstream fails loudly instead of decrypting.

Substitution
    :func:`render` replaces ``{secret:NAME}`` in a header or env value with the value. It is
    called only when a connection is opened.

Redaction
    :class:`Redactor` replaces every known secret value (and its percent-encoded and
    JSON-escaped forms) in any text with ``[redacted]``. Every string that leaves the
    package (upstream error text, stderr lines, exception messages, results) goes through
    one. As a second line, :func:`register` adds a redactor to a process-wide set that a
    logging record factory consults: a log record whose message, arguments or exception
    would carry a live secret (from the SDK's own loggers, say) is scrubbed before any
    handler sees it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import secrets as _random
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from northstar.common.errors import SecretsUnavailable
from northstar.upstreams.spec import SECRET_REF

KEY_FILE_ENV: Final = "NORTHSTAR_SECRETS_KEY_FILE"
KEY_FILE_NAME: Final = "secrets.key"
ALG: Final = "A256GCM"
MASK: Final = "[redacted]"

log = logging.getLogger("northstar.upstreams.secrets")


# --------------------------------------------------------------------------- the key file


def key_path(data_dir: Path | str, environ: Mapping[str, str] | None = None) -> Path:
    """Where the key lives: ``NORTHSTAR_SECRETS_KEY_FILE`` or ``<data_dir>/secrets.key``."""
    env = os.environ if environ is None else environ
    explicit = env.get(KEY_FILE_ENV)
    return Path(explicit) if explicit else Path(data_dir) / KEY_FILE_NAME


def _read_key(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & 0o077:
        log.warning("the secrets key file is accessible to other users; make it 0600",
                    extra={"path": str(path), "mode": oct(mode & 0o777)})
    try:
        key = base64.urlsafe_b64decode(path.read_text(encoding="ascii").strip())
    except (ValueError, UnicodeDecodeError):
        raise SecretsUnavailable("the secrets key file is not valid") from None
    if len(key) != 32:
        raise SecretsUnavailable("the secrets key file must hold 32 bytes (URL-safe base64)")
    return key


def load_or_create_key(path: Path) -> bytes:
    """The key at ``path``; created (0600, atomically) when absent. Safe against a racing creator."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{_random.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(base64.urlsafe_b64encode(_random.token_bytes(32)).decode("ascii") + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)  # atomic, and fails if another process got there first
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return _read_key(path)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class SecretBox:
    """Seals and opens upstream secret mappings with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the key must be 32 bytes")
        self._aead = AESGCM(key)
        self.kid = hashlib.sha256(b"northstar.upstreams.kid:" + key).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"<SecretBox kid={self.kid}>"

    @classmethod
    def from_file(cls, path: Path) -> SecretBox:
        return cls(load_or_create_key(path))

    @staticmethod
    def _aad(upstream: str) -> bytes:
        return f"northstar.upstreams:{upstream}".encode()

    def seal(self, upstream: str, values: Mapping[str, str]) -> dict[str, str]:
        """An encrypted, JSON-storable form of ``values``, bound to ``upstream``."""
        nonce = _random.token_bytes(12)
        plain = json.dumps(dict(values), sort_keys=True, separators=(",", ":")).encode()
        sealed = self._aead.encrypt(nonce, plain, self._aad(upstream))
        return {"alg": ALG, "kid": self.kid, "nonce": _b64(nonce), "ct": _b64(sealed)}

    def open(self, upstream: str, sealed: Mapping[str, Any]) -> dict[str, str]:
        """The values sealed for ``upstream``; ``SecretsUnavailable`` on any mismatch."""
        if sealed.get("alg") != ALG:
            raise SecretsUnavailable(f"upstream {upstream}: unknown sealing algorithm")
        if sealed.get("kid") != self.kid:
            raise SecretsUnavailable(f"upstream {upstream}: its secrets were sealed with another key")
        try:
            plain = self._aead.decrypt(_unb64(sealed["nonce"]), _unb64(sealed["ct"]), self._aad(upstream))
            values = json.loads(plain)
        except (InvalidTag, KeyError, ValueError, TypeError):
            raise SecretsUnavailable(f"upstream {upstream}: its sealed secrets do not open") from None
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise SecretsUnavailable(f"upstream {upstream}: its sealed secrets are malformed")
        return values


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise TypeError("not base64 text")
    return base64.urlsafe_b64decode(text.encode("ascii"))


# --------------------------------------------------------------------------- substitution


def render(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each ``{secret:NAME}`` replaced (names were checked at registration)."""
    return SECRET_REF.sub(lambda m: values[m.group(1)], template)


def render_all(templates: Mapping[str, str], values: Mapping[str, str]) -> dict[str, str]:
    return {key: render(text, values) for key, text in templates.items()}


# --------------------------------------------------------------------------- redaction


def _variants(value: str) -> set[str]:
    """The forms a secret takes in text: as is, percent-encoded, JSON-escaped."""
    forms = {value, quote(value, safe=""), json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    return {f for f in forms if f}


class Redactor:
    """Replaces every known secret value in text (and in JSON values) with ``[redacted]``."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for value in values:
            if value:
                forms |= _variants(value)
        # Longest first, so a value that contains another is masked whole.
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(f) for f in ordered)) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def scrub(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def hits(self, text: str) -> bool:
        return self._pattern is not None and self._pattern.search(text) is not None

    def scrub_json(self, value: Any) -> Any:
        """A copy of a JSON value with every string (keys too) scrubbed."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, list):
            return [self.scrub_json(v) for v in value]
        if isinstance(value, dict):
            return {self.scrub(k) if isinstance(k, str) else k: self.scrub_json(v) for k, v in value.items()}
        return value


# --------------------------------------------------------------------------- logs (second line)

_live: dict[int, Redactor] = {}
_lock = threading.Lock()
_installed = False


def register(redactor: Redactor) -> int:
    """Scrub ``redactor``'s secrets from every log record from now on; returns a token."""
    global _installed
    with _lock:
        token = id(redactor)
        _live[token] = redactor
        if not _installed:
            _install_record_factory()
            _installed = True
        return token


def unregister(token: int) -> None:
    with _lock:
        _live.pop(token, None)


def scrub_live(text: str) -> str:
    """``text`` with the secrets of every registered (live) upstream masked."""
    for redactor in list(_live.values()):
        text = redactor.scrub(text)
    return text


def _live_hits(text: str) -> bool:
    return any(r.hits(text) for r in list(_live.values()))


def _install_record_factory() -> None:
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _live:
            _scrub_record(record)
        return record

    logging.setLogRecordFactory(factory)


def _scrub_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: leave it to the handler to report
        return
    if _live_hits(message):
        record.msg, record.args = scrub_live(message), None
    if record.exc_info and record.exc_info[1] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        if _live_hits(text):
            # The formatted traceback replaces the exception: handlers format exc_info afresh.
            record.msg, record.args = f"{record.getMessage()}\n{scrub_live(text)}", None
            record.exc_info, record.exc_text = None, None
    # ``extra`` attributes are set after the factory runs; this package scrubs its own before logging.
