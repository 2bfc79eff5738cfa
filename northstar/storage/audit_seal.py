"""The audit log's keyed seal: an HMAC key kept outside the database, a sealed head, anchors.

The hash chain proves that stored entries link up; on its own it cannot tell a rewritten log
from an honest one, because whoever can write the database can re-hash every entry after an
edit, or cut the tail and move the recorded head back. The seal adds a secret the database does
not hold:

* **the sealed head**: every group commit stores ``HMAC(key, head seq, head hash)`` beside the
  head it moves, in the same UPDATE (no extra write on the call path). A head moved without the
  key (after a truncation, or after an edit and a re-hash) no longer matches its MAC.
* **anchors**: every ``anchor_every`` records or ``anchor_interval_s`` seconds, whichever comes
  first, and off the commit path, the log writes an anchor ``(seq, hash, ts, HMAC)`` to the
  ``audit_anchors`` table and appends it to an append-only file outside the database. An old
  head put back together with the MAC it had then (a replay after a truncation) is older than
  the newest anchor; an entry edited before an anchor no longer hashes to the anchored value.
  Records committed after the newest anchor are covered by the sealed head only: that is the
  window a replayed head can hide (at most ``anchor_every`` records or ``anchor_interval_s``).

The key is 32 random bytes, written as hex to a 0600 file on first use (``<data_dir>/audit.key``
or ``NORTHSTAR_AUDIT_KEY_FILE``). Its ``key_id`` is registered in the store on first open; a
process holding another key refuses to open that store, so two keys never seal one log.

Pure functions plus small, synchronous file helpers (run them in a worker thread from trio).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("northstar.storage.audit_seal")

KEY_BYTES = 32
ANCHOR_EVERY = 1000
ANCHOR_INTERVAL_S = 5.0


class AuditSealError(RuntimeError):
    """The audit key cannot be used with this store (missing, unreadable, or another store's)."""


def key_id_of(key: bytes) -> str:
    return hmac.new(key, b"northstar-audit-key-id", hashlib.sha256).hexdigest()[:16]


def _mac(key: bytes, *parts: object) -> str:
    message = "\x00".join(str(p) for p in parts).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def head_mac(key: bytes, seq: int, hash_: str) -> str:
    """The MAC stored beside the recorded head ``(seq, hash)``."""
    return _mac(key, "northstar-audit-head", int(seq), hash_)


@dataclass(frozen=True, slots=True)
class Anchor:
    """A keyed checkpoint: the chain had ``hash`` at ``seq`` when ``ts`` was written."""

    seq: int
    hash: str
    ts: str
    key_id: str
    mac: str

    def to_json(self) -> str:
        return json.dumps({"seq": self.seq, "hash": self.hash, "ts": self.ts, "key_id": self.key_id,
                           "mac": self.mac}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Anchor:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise TypeError("an anchor is a JSON object")
        seq = data["seq"]
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise TypeError("seq must be an integer")
        return cls(seq, str(data["hash"]), str(data["ts"]), str(data["key_id"]), str(data["mac"]))


def make_anchor(key: bytes, seq: int, hash_: str, ts: str) -> Anchor:
    return Anchor(int(seq), hash_, ts, key_id_of(key), _mac(key, "northstar-audit-anchor", int(seq), hash_, ts))


def anchor_problem(key: bytes, anchor: Anchor) -> str | None:
    """Why ``anchor`` cannot be trusted under ``key``, or None when its MAC holds."""
    if anchor.key_id != key_id_of(key):
        return f"anchor at seq {anchor.seq} was made with another audit key ({anchor.key_id})"
    expected = _mac(key, "northstar-audit-anchor", anchor.seq, anchor.hash, anchor.ts)
    if not hmac.compare_digest(expected, anchor.mac):
        return f"anchor at seq {anchor.seq} does not carry a valid MAC (forged or altered)"
    return None


# -- files ------------------------------------------------------------------------------------


def _read_key(path: Path) -> bytes:
    text = path.read_text(encoding="ascii").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise AuditSealError(f"{path} does not hold a hex audit key") from None
    if len(key) != KEY_BYTES:
        raise AuditSealError(f"{path} does not hold a {KEY_BYTES}-byte audit key")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("the audit key file is readable by other users; chmod 600 it",
                    extra={"path": str(path), "mode": oct(mode)})
    return key


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``, created (0600, atomically) when the file does not exist yet.

    Several processes starting together agree on one key: each writes a private temporary file
    and hard-links it into place; ``link`` refuses to replace an existing file, so the first one
    wins and the others read what it wrote (never a half-written file).
    """
    return _load_or_create(Path(path))[0]


def _load_or_create(path: Path) -> tuple[bytes, bool]:
    """``(key, whether this call created the file)``."""
    if path.exists():
        return _read_key(path), False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_bytes(KEY_BYTES).hex() + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
            created = True
        except FileExistsError:
            created = False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return _read_key(path), created


def append_anchor(path: Path, anchor: Anchor) -> None:
    """Append one anchor line to the file (created 0600), and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (anchor.to_json() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_anchors(path: Path | None) -> tuple[list[Anchor], list[str]]:
    """The anchors in the file, and a problem for each line that is not an anchor.

    A last line without its newline is a write cut short by a crash: it is left out, not reported.
    """
    if path is None or not Path(path).exists():
        return [], []
    lines = Path(path).read_text(encoding="utf-8", errors="replace").split("\n")
    lines.pop()  # "" after the final newline, or the torn tail of an interrupted append
    anchors: list[Anchor] = []
    problems: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            anchors.append(Anchor.from_json(line))
        except (ValueError, KeyError, TypeError):
            problems.append(f"{Path(path).name} line {number} is not an anchor")
    return anchors, problems


@dataclass(frozen=True, slots=True)
class AuditSeal:
    """The key and the anchoring policy one audit log is sealed with.

    ``key_file`` / ``new_key``: where the key came from, and whether opening the seal just
    created that file; a store sealed with another key then gets it removed again (it sealed
    nothing), so a mistaken start leaves no stray key behind.
    """

    key: bytes
    anchor_file: Path | None = None
    anchor_every: int = ANCHOR_EVERY
    anchor_interval_s: float = ANCHOR_INTERVAL_S
    key_file: Path | None = None
    new_key: bool = False

    def discard_new_key(self) -> None:
        if self.new_key and self.key_file is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.key_file)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise ValueError(f"the audit key must be {KEY_BYTES} bytes")
        if self.anchor_every < 1 or self.anchor_interval_s <= 0:
            raise ValueError("anchor_every must be >= 1 and anchor_interval_s > 0")

    def __repr__(self) -> str:  # never the key
        return f"AuditSeal(key_id={self.key_id!r}, anchor_file={self.anchor_file!r})"

    @property
    def key_id(self) -> str:
        return key_id_of(self.key)

    def head_mac(self, seq: int, hash_: str) -> str:
        return head_mac(self.key, seq, hash_)

    def anchor(self, seq: int, hash_: str, ts: str) -> Anchor:
        return make_anchor(self.key, seq, hash_, ts)


def open_seal(key_file: Path, anchor_file: Path | None, **policy: Any) -> AuditSeal:
    """The seal of a data directory: its key (created on first use) and its anchor file."""
    key, created = _load_or_create(Path(key_file))
    return AuditSeal(key, None if anchor_file is None else Path(anchor_file), key_file=Path(key_file),
                     new_key=created, **policy)


def valid_anchors(key: bytes, anchors: Iterable[Anchor]) -> tuple[dict[int, Anchor], list[tuple[int, str]]]:
    """Anchors whose MAC holds, by seq, and ``(seq, problem)`` for every other one."""
    good: dict[int, Anchor] = {}
    bad: list[tuple[int, str]] = []
    for anchor in anchors:
        problem = anchor_problem(key, anchor)
        if problem is not None:
            bad.append((anchor.seq, problem))
        elif anchor.seq in good and good[anchor.seq].hash != anchor.hash:
            bad.append((anchor.seq, f"two anchors at seq {anchor.seq} disagree"))
        else:
            good[anchor.seq] = anchor
    return good, bad


class AuditSealBroken(RuntimeError):
    """The recorded head is not sealed by the key: the log was changed outside northstar.

    The writer refuses to extend such a head (the audit log fails closed) rather than seal the
    altered chain with a fresh MAC; ``northstar audit verify`` says where it stops being provable.
    """


def check_head(seal: AuditSeal | None, seq: int, hash_: str, mac: str | None) -> None:
    """Before extending the head: it must carry this seal's MAC (nothing to check unsealed)."""
    if seal is None:
        return
    if mac is None or not hmac.compare_digest(mac, seal.head_mac(seq, hash_)):
        raise AuditSealBroken(
            f"the audit head (seq {seq}) is not sealed by audit key {seal.key_id}: the log was changed "
            "outside northstar; nothing more is appended until an operator investigates "
            "(northstar audit verify)"
        )


def registration_problem(registered: str | None, seal: AuditSeal | None) -> str | None:
    """Why this process may not write a log registered to ``registered`` (a key id), or None."""
    if registered is None or (seal is not None and seal.key_id == registered):
        return None
    if seal is None:
        return f"this store's audit log is sealed with audit key {registered}: open it with that key"
    where = f" in {seal.key_file}" if seal.key_file is not None else ""
    return (f"this store's audit log is sealed with audit key {registered}, not {seal.key_id}{where}: use the "
            "key file of the gateway that first opened this store (copy it, or point NORTHSTAR_AUDIT_KEY_FILE "
            "at it)")
