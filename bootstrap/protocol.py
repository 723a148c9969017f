"""Host <-> agent control channel: framing and message catalogue.

The channel is one ``AF_UNIX`` ``SOCK_STREAM`` socketpair per sandbox. The agent's
end is created inside the sandbox's network namespace and inherited by the agent;
at checkpoint it is dumped as an external unix socket and on every restore CRIU
re-attaches a fresh socketpair end in its place (``--inherit-fd``), so each clone
gets its own channel while the snapshot stays shared.

Frame format (both directions)::

    +----------------------+---------------------------------------+
    | u32 big-endian len N | N bytes: msgpack map, always with "op" |
    +----------------------+---------------------------------------+

``N`` is checked against ``MAX_FRAME`` (16 MiB) before anything is read or parsed;
a larger frame is a protocol error and the channel is closed. Binary values
(payloads, error bodies, log data) are msgpack ``bin``; text is ``str``.

Host -> agent:
    start     {argv: [str], env: {str: str}, cwd: str, init_type: "snap-start"|"on-demand"}
              sent once after spawn; the agent starts the runtime.
    invoke    {id, payload: bin, deadline_ms: int, arn, trace_id?, client_context?, cognito?}
              queued; delivered on the runtime's next GET /invocation/next.
    resume    {}  after a restore: answer the runtime's parked GET /restore/next (200).
    ping      {}  -> pong

Agent -> host:
    ready          {}  the runtime asked for its first invocation (init is done)
    snapshot       {}  the runtime called GET /restore/next (init and before-snapshot
                       hooks are done); the tree is quiescent and may be dumped
    init_error     {type, body: bin}       POST /init/error
    restore_error  {type, body: bin}       POST /restore/error
    response       {id, payload: bin}      POST /invocation/{id}/response
    error          {id, type, body: bin}   POST /invocation/{id}/error (or an agent-side
                                            failure such as Function.ResponseSizeTooLarge)
    log            {data: bin}             the runtime's stdout/stderr (in order; all log
                                            output written before a response/error frame is
                                            sent before that frame)
    exit           {status: int}           the runtime exited (exit code, or -signal)
    pong           {}
    fatal          {message}               the agent itself failed; it exits next

This module is imported by both sides and must stay dependency-light (msgpack).
"""

from __future__ import annotations

import socket
import struct

import msgpack

__all__ = ["MAX_FRAME", "ProtocolError", "encode", "FrameReader", "send", "recv"]

MAX_FRAME = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """A malformed or oversized frame, or the peer closed the channel."""


def encode(msg: dict) -> bytes:
    body = msgpack.packb(msg, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _HEADER.pack(len(body)) + body


def send(sock: socket.socket, msg: dict) -> None:
    sock.sendall(encode(msg))


def _decode(body: bytes) -> dict:
    try:
        msg = msgpack.unpackb(body, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"undecodable frame: {exc}") from exc
    if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
        raise ProtocolError("frame is not a map with an 'op'")
    return msg


class FrameReader:
    """Incremental decoder for a non-blocking reader (the agent's event loop)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict]:
        self._buf += data
        out = []
        while len(self._buf) >= 4:
            (n,) = _HEADER.unpack_from(self._buf)
            if n > MAX_FRAME:
                raise ProtocolError(f"frame of {n} bytes exceeds {MAX_FRAME}")
            if len(self._buf) < 4 + n:
                break
            body = bytes(self._buf[4:4 + n])
            del self._buf[:4 + n]
            out.append(_decode(body))
        return out


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ProtocolError("channel closed by peer")
        buf += chunk
    return bytes(buf)


def recv(sock: socket.socket) -> dict:
    """Blocking read of one frame (the host side; honours the socket's timeout)."""
    (n,) = _HEADER.unpack(_recv_exact(sock, 4))
    if n > MAX_FRAME:
        raise ProtocolError(f"frame of {n} bytes exceeds {MAX_FRAME}")
    return _decode(_recv_exact(sock, n))
