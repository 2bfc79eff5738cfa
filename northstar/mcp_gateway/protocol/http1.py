"""HTTP/1.1 for the express lane: a strict request-head reader and the response framing. No I/O.

The express lane (``transports/http/express.py``) answers the requests that dominate an MCP
gateway's traffic, ``POST`` to an MCP endpoint, without the HTTP server's generic per-request
machinery. It must never read a request differently from the server it stands in front of, so
:func:`read_head` takes only heads it can read without judgement and *declines* everything
else, leaving the bytes untouched for the server's own parser (h11), which then answers as it
always did, errors included. Taken:

* ``POST`` with an origin-form target that is exactly one of the lane's paths (no query, no
  percent-encoding) and the version ``HTTP/1.1``;
* header lines ``name: value`` where the name is an RFC 9110 token and the value field-content
  (no control characters but tab; no obsolete line folding; every line ends with CRLF);
* exactly one ``Host``; exactly one ``Content-Length`` of at most 18 digits (none means an
  empty body); no ``Transfer-Encoding``, ``Expect``, ``Upgrade`` or ``TE``; a ``Connection``
  that names only ``keep-alive`` or ``close``.

So a request has one framing only (its Content-Length), the one h11 would have found, and
request smuggling through disagreement has nothing to work with. Header names are lowercased
and values stripped of surrounding whitespace, as h11 hands them to the ASGI scope.

Responses: :func:`response_head` frames a status line and headers (names and values checked:
no CR, LF or NUL can reach the wire, so no response splitting), with ``Content-Length`` or
chunked transfer coding, as h11 would write them.

The client side, for the upstreams' lean lane (``northstar/upstreams/lean.py``), follows the same
rule: :func:`header_lines` writes request headers (checked the same way), and
:func:`read_response_head` takes only an ``HTTP/1.1`` response framed by exactly one
``Content-Length`` (no ``Transfer-Encoding``, no informational or bodiless status) and declines
anything else, which the caller then reads with h11.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

#: The read-ahead limit of a request head: a longer head is declined (the server answers 431).
MAX_HEAD_BYTES: Final = 64 * 1024
MAX_HEADERS: Final = 100

_REQUEST_LINE = re.compile(rb"POST (/[A-Za-z0-9/_.~-]*) HTTP/1\.1")
_FIELD = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*((?:[\x21-\x7e\x80-\xff](?:[ \t]*[\x21-\x7e\x80-\xff])*)?)[ \t]*"
)
_DIGITS = re.compile(rb"[0-9]{1,18}")
_NAME_OK = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE_OK = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_REFUSED: Final = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"te"})
_STATUS: dict[int, bytes] = {}


class NeedMore:
    """The head is not complete yet (and within the limit)."""


class Decline:
    """Not a head the lane takes: hand the bytes to the server as they are."""


NEED_MORE: Final = NeedMore()
DECLINE: Final = Decline()


@dataclass(frozen=True, slots=True)
class Head:
    path: str
    headers: list[tuple[bytes, bytes]]
    content_length: int
    close: bool  # the client asked to close the connection after this request
    end: int  # where the body starts in the buffer


def read_head(buf: bytes | bytearray, paths: frozenset[bytes]) -> Head | NeedMore | Decline:
    """The request head at the start of ``buf``, if the lane takes it (see the module's rules)."""
    end = buf.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
    if end < 0:
        if (len(buf) > MAX_HEAD_BYTES or not buf.startswith(b"POST /"[: len(buf)])
                or buf.count(b"\n") != buf.count(b"\r\n")):  # bare LF: the server's parser decides
            return DECLINE
        return NEED_MORE
    lines = bytes(buf[:end]).split(b"\r\n")
    line = _REQUEST_LINE.fullmatch(lines[0])
    if line is None or line.group(1) not in paths or len(lines) > MAX_HEADERS + 1:
        return DECLINE
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    hosts = 0
    close = False
    for raw in lines[1:]:
        field = _FIELD.fullmatch(raw)
        if field is None:
            return DECLINE
        name, value = field.group(1).lower(), field.group(2)
        if name in _REFUSED:
            return DECLINE
        if name == b"content-length":
            if length is not None or _DIGITS.fullmatch(value) is None:
                return DECLINE
            length = int(value)
        elif name == b"host":
            hosts += 1
        elif name == b"connection":
            for token in value.lower().split(b","):
                token = token.strip(b" \t")
                if token == b"close":
                    close = True
                elif token != b"keep-alive":
                    return DECLINE
        headers.append((name, value))
    if hosts != 1:
        return DECLINE
    return Head(line.group(1).decode("ascii"), headers, length or 0, close, end + 4)


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    content_type: str
    content_length: int
    close: bool  # the server closes the connection after this response
    end: int  # where the body starts in the buffer


_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9])(?: [\t\x20-\x7e\x80-\xff]*)?")


def read_response_head(buf: bytes | bytearray) -> ResponseHead | NeedMore | Decline:
    """The response head at the start of ``buf``, if it is framed by one Content-Length alone."""
    end = buf.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
    if end < 0:
        if len(buf) > MAX_HEAD_BYTES or buf.count(b"\n") != buf.count(b"\r\n"):
            return DECLINE
        return NEED_MORE
    lines = bytes(buf[:end]).split(b"\r\n")
    line = _STATUS_LINE.fullmatch(lines[0])
    if line is None or len(lines) > MAX_HEADERS + 1:
        return DECLINE
    status = int(line.group(1))
    if bodiless(status):
        return DECLINE
    length: int | None = None
    content_type = b""
    close = False
    for raw in lines[1:]:
        field = _FIELD.fullmatch(raw)
        if field is None:
            return DECLINE
        name, value = field.group(1).lower(), field.group(2)
        if name == b"content-length":
            if length is not None or _DIGITS.fullmatch(value) is None:
                return DECLINE
            length = int(value)
        elif name == b"transfer-encoding":
            return DECLINE
        elif name == b"content-type":
            content_type = value
        elif name == b"connection":
            for token in value.lower().split(b","):
                token = token.strip(b" \t")
                if token == b"close":
                    close = True
                elif token != b"keep-alive":
                    return DECLINE
    if length is None:
        return DECLINE  # delimited by the close: h11 reads that
    return ResponseHead(status, content_type.decode("latin-1"), length, close, end + 4)


def header_lines(headers: list[tuple[str, str]] | list[tuple[bytes, bytes]]) -> bytes:
    """``name: value`` lines for a request; ``ValueError`` for a header that cannot be written safely."""
    out = []
    for name, value in headers:
        raw_name = name.encode("ascii") if isinstance(name, str) else bytes(name)  # as h11 encodes text
        raw_value = value.encode("ascii") if isinstance(value, str) else bytes(value)
        if _NAME_OK.fullmatch(raw_name) is None or _VALUE_OK.fullmatch(raw_value) is None:
            raise ValueError(f"a request header cannot be written: {raw_name[:64]!r}")
        out.append(b"%s: %s\r\n" % (raw_name, raw_value.strip(b" \t")))
    return b"".join(out)


def _status_line(status: int) -> bytes:
    line = _STATUS.get(status)
    if line is None:
        if not 100 <= status <= 999:
            raise ValueError(f"not an HTTP status: {status!r}")
        line = _STATUS[status] = b"HTTP/1.1 %d \r\n" % status
    return line


def bodiless(status: int) -> bool:
    """Statuses whose responses carry no body and no framing headers (RFC 9110 6.4.1)."""
    return status < 200 or status in (204, 304)


def response_head(status: int, headers: list[tuple[bytes, bytes]], extra: list[tuple[bytes, bytes]],
                  length: int | None, close: bool) -> bytes:
    """A status line and headers; ``length`` None frames the body as chunks (unless bodiless).

    The application's own ``content-length``, ``transfer-encoding`` and ``connection`` headers
    are replaced by the framing chosen here. Raises ``ValueError`` for a header that cannot be
    written safely (the caller answers 500 instead).
    """
    out = [_status_line(status)]
    for name, value in headers:
        name = bytes(name).lower()
        if name in (b"content-length", b"transfer-encoding", b"connection"):
            continue
        value = bytes(value)
        if _NAME_OK.fullmatch(name) is None or _VALUE_OK.fullmatch(value) is None:
            raise ValueError(f"a response header cannot be written: {name[:64]!r}")
        out.append(b"%s: %s\r\n" % (name, value))
    for name, value in extra:
        out.append(b"%s: %s\r\n" % (name, value))
    if not bodiless(status):
        out.append(b"content-length: %d\r\n" % length if length is not None else b"transfer-encoding: chunked\r\n")
    if close:
        out.append(b"connection: close\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (empty data writes nothing: the last chunk is :data:`LAST_CHUNK`)."""
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


LAST_CHUNK: Final = b"0\r\n\r\n"
