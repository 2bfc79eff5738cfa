"""The express lane's HTTP/1.1 reader and framing (``protocol/http1.py``).

The reader must never read a request differently from Hypercorn's parser (h11): every head it
takes, h11 reads to the same method, target, headers and body length; everything unusual is
declined (handed to h11 untouched). h11 itself is the oracle here, on hand-written heads and on
generated ones.
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from northstar.mcp_gateway.protocol import http1
from northstar.mcp_gateway.protocol.http1 import DECLINE, NEED_MORE, Head, read_head, response_head

PATHS = frozenset({b"/mcp", b"/mcp/", b"/mcp/stateless"})


def h11_reads(data: bytes) -> tuple[h11.Request, int] | None:
    """What h11 (as Hypercorn's server) reads from ``data``: the request and its body length, or
    None when it refuses the head."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(event, h11.Request):
        return None
    length = 0
    for name, value in event.headers:
        if name == b"content-length":
            length = int(value)
    return event, length


def agrees_with_h11(data: bytes) -> Head:
    head = read_head(data, PATHS)
    assert isinstance(head, Head), head
    oracle = h11_reads(data)
    assert oracle is not None, "the lane took a head h11 refuses"
    request, length = oracle
    assert request.method == b"POST"
    assert request.target == head.path.encode()
    assert list(request.headers) == head.headers
    assert length == head.content_length
    return head


def test_a_plain_mcp_post_is_taken_as_h11_reads_it() -> None:
    data = (b"POST /mcp HTTP/1.1\r\nHost: gw:8000\r\nContent-Type: application/json\r\n"
            b"Content-Length: 17\r\nMcp-Session-Id:  abc \r\n\r\n{\"jsonrpc\":\"2.0\"}")
    head = agrees_with_h11(data)
    assert head.path == "/mcp" and head.content_length == 17 and not head.close
    assert data[head.end:] == b"{\"jsonrpc\":\"2.0\"}"
    assert (b"mcp-session-id", b"abc") in head.headers  # lowercased, stripped: as h11 hands them over


@pytest.mark.parametrize("value", [b"close", b"Close", b"keep-alive, close", b"close,keep-alive"])
def test_connection_close_is_heard(value: bytes) -> None:
    head = agrees_with_h11(b"POST /mcp/stateless HTTP/1.1\r\nHost: a\r\nConnection: " + value + b"\r\n\r\n")
    assert head.close and head.content_length == 0


def test_an_incomplete_head_waits_and_a_foreign_one_is_declined_at_once() -> None:
    assert read_head(b"POST /mcp HTTP/1.1\r\nHost: a\r\n", PATHS) is NEED_MORE
    assert read_head(b"PO", PATHS) is NEED_MORE
    assert read_head(b"GET /mcp HTTP/1.1\r\n", PATHS) is DECLINE  # not a POST: Hypercorn's from the start
    assert read_head(b"POST /mcp HTTP/1.1\nHost: a\n", PATHS) is DECLINE  # bare LF: h11 decides
    assert read_head(b"POST /" + b"a" * (http1.MAX_HEAD_BYTES + 1), PATHS) is DECLINE


DECLINED = {
    "another method": b"GET /mcp HTTP/1.1\r\nHost: a\r\n\r\n",
    "lowercase method": b"post /mcp HTTP/1.1\r\nHost: a\r\n\r\n",
    "another path": b"POST /v1/tools HTTP/1.1\r\nHost: a\r\n\r\n",
    "a query": b"POST /mcp?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
    "percent-encoding": b"POST /mc%70 HTTP/1.1\r\nHost: a\r\n\r\n",
    "absolute form": b"POST http://a/mcp HTTP/1.1\r\nHost: a\r\n\r\n",
    "HTTP/1.0": b"POST /mcp HTTP/1.0\r\nHost: a\r\n\r\n",
    "two spaces": b"POST  /mcp HTTP/1.1\r\nHost: a\r\n\r\n",
    "no Host": b"POST /mcp HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "two Hosts": b"POST /mcp HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "CL and TE (smuggling)": (b"POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n"),
    "TE only": b"POST /mcp HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    "two equal CLs": b"POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
    "two CLs": b"POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    "a signed CL": b"POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
    "a hex CL": b"POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n",
    "a CL list": b"POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n",
    "a huge CL": b"POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: 1234567890123456789\r\n\r\n",
    "obsolete folding": b"POST /mcp HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
    "space before the colon": b"POST /mcp HTTP/1.1\r\nHost : a\r\n\r\n",
    "a NUL in a value": b"POST /mcp HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n",
    "a CR in a value": b"POST /mcp HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n",
    "a bare LF inside": b"POST /mcp HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n",
    "a bad name": b"POST /mcp HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n",
    "Expect": b"POST /mcp HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
    "Upgrade": b"POST /mcp HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    "TE header": b"POST /mcp HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
    "Connection: upgrade": b"POST /mcp HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n",
    "too many headers": b"POST /mcp HTTP/1.1\r\nHost: a\r\n" + b"X-A: b\r\n" * http1.MAX_HEADERS + b"\r\n",
}


@pytest.mark.parametrize("data", list(DECLINED.values()), ids=list(DECLINED))
def test_anything_unusual_is_declined_for_the_server_to_answer(data: bytes) -> None:
    assert read_head(data, PATHS) is DECLINE


# -- generated heads: whatever the lane takes, h11 reads the same --------------------------------
def mostly(common: list[bytes], rare: list[bytes]) -> st.SearchStrategy[bytes]:
    """Usually one of ``common``, sometimes one of ``rare``: heads the lane takes, and near misses."""
    return st.sampled_from(common * 12 + rare)


NAMES = mostly([b"Content-Length", b"content-length", b"Connection", b"X-A", b"Mcp-Session-Id", b"Authorization",
                b"Accept", b"HOST"],
               [b"Transfer-Encoding", b"Expect", b"Te", b"X_A", b"X A", b"", b"X-\xff", b"Host:"])
VALUES = st.one_of(
    mostly([b"0", b"12", b"007", b"close", b"keep-alive", b"Keep-Alive, Close", b"", b"a\tb", b"\xe9t\xe9",
            b"application/json, text/event-stream", b"Bearer x.y"],
           [b"-1", b"1,1", b" 3 ", b"upgrade", b"chunked", b"a\x00", b"a\rb", b"a\nb", b"\x7f", b"1" * 19]),
    st.binary(max_size=12),  # anything at all
)
LINE_ENDS = mostly([b"\r\n"], [b"\n", b"\r"])
TARGETS = mostly([b"/mcp", b"/mcp/", b"/mcp/stateless"], [b"/mcp?x", b"/MCP", b"*", b"/mcp#", b"//mcp"])
SEPARATORS = mostly([b": ", b":", b":\t", b":  "], [b" : ", b" :"])


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    method = draw(mostly([b"POST"], [b"GET", b"post", b"PUT"]))
    version = draw(mostly([b"HTTP/1.1"], [b"HTTP/1.0", b"HTTP/2.0", b"http/1.1"]))
    fields = [(draw(NAMES), draw(VALUES)) for _ in range(draw(st.integers(0, 5)))]
    hosts = draw(st.sampled_from([1] * 12 + [0, 2]))
    for _ in range(hosts):
        fields.insert(draw(st.integers(0, len(fields))), (b"Host", draw(mostly([b"gw:8000", b"a"], [b"", b"a b"]))))
    out = [method + b" " + draw(TARGETS) + b" " + version + draw(LINE_ENDS)]
    out += [name + draw(SEPARATORS) + value + draw(LINE_ENDS) for name, value in fields]
    out.append(b"\r\n")
    return b"".join(out)


@settings(max_examples=2000, deadline=None)
@given(heads(), st.binary(max_size=8))
def test_every_head_the_lane_takes_h11_reads_the_same(data: bytes, body: bytes) -> None:
    head = read_head(data + body, PATHS)
    if isinstance(head, Head):
        agrees_with_h11(data + body)
        assert head.end == data.find(b"\r\n\r\n") + 4  # a generated value may end the head early
    else:
        assert head is DECLINE or head is NEED_MORE


# -- responses -------------------------------------------------------------------------------------
def parse_response(data: bytes) -> tuple[h11.Response, bytes]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/mcp", headers=[("Host", "a"), ("Content-Length", "0")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    conn.receive_data(b"")
    response = conn.next_event()
    assert isinstance(response, h11.Response)
    body = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return response, body
        else:
            raise AssertionError(f"unexpected {event!r}")  # noqa: TRY004 - a failed test, not bad input


def test_a_response_with_a_length_reads_back_whole() -> None:
    head = response_head(200, [(b"content-type", b"application/json"), (b"Content-Length", b"999")],
                         [(b"date", b"Mon, 07 Dec 2026 13:00:00 GMT")], 2, False)
    response, body = parse_response(head + b"{}")
    assert response.status_code == 200 and body == b"{}"
    assert dict(response.headers)[b"content-length"] == b"2"  # the framing is the lane's, not the app's
    assert b"connection" not in dict(response.headers)


def test_a_streamed_response_is_chunked_and_close_is_said() -> None:
    data = (response_head(200, [(b"content-type", b"text/event-stream"), (b"transfer-encoding", b"gzip")], [],
                          None, True)
            + http1.chunk(b"event: message\r\n") + http1.chunk(b"") + http1.chunk(b"data: {}\r\n\r\n")
            + http1.LAST_CHUNK)
    response, body = parse_response(data)
    headers = dict(response.headers)
    assert headers[b"transfer-encoding"] == b"chunked" and headers[b"connection"] == b"close"
    assert body == b"event: message\r\ndata: {}\r\n\r\n"


@pytest.mark.parametrize("status", [204, 304, 101])
def test_bodiless_statuses_get_no_framing(status: int) -> None:
    head = response_head(status, [], [], 0, False)
    assert b"content-length" not in head and b"transfer-encoding" not in head


@pytest.mark.parametrize("header", [(b"x-a", b"b\r\nSet-Cookie: x=1"), (b"x-a", b"b\nc"), (b"x-a", b"b\x00"),
                                    (b"x a", b"b"), (b"x-a\r\n", b"b"), (b"", b"b")])
def test_no_header_can_split_a_response(header: tuple[bytes, bytes]) -> None:
    with pytest.raises(ValueError):
        response_head(200, [header], [], 0, False)


@pytest.mark.parametrize("status", [0, 99, 1000, -200])
def test_an_impossible_status_is_refused(status: int) -> None:
    with pytest.raises(ValueError):
        response_head(status, [], [], 0, False)
