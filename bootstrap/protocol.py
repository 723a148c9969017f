"""Host <-> agent control channel: framing, version and message catalogue.

The channel is one ``AF_UNIX`` ``SOCK_STREAM`` socketpair per sandbox. The agent's
end is created inside the sandbox's network namespace and inherited by the sandbox;
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

Version
-------
``VERSION`` is the version of this catalogue. The agent's code is frozen into every
snapshot, so the host must know which version a restored agent speaks: the agent
sends ``hello`` as its first frame, the host records its ``v`` in the snapshot's
manifest at publish (``agent_protocol``), and refuses to restore a snapshot whose
version it does not speak (``SUPPORTED``), falling back to a cold start. Version 1
(no ``hello``; snapshots made before it was introduced) is not spoken any more.
Version 3 added streamed responses (``stream``, ``stream_chunk``); a version 2 agent
never sends them, so the host speaks both. Version 4 added ``populate`` (and the
same field on ``resume``); the host sends it only to agents of version 4 or later
(snapstart/checkpoint/hotset.py), so it speaks 2, 3 and 4.

Layouts (``hello.layout``)
--------------------------
Every sandbox's PID 1 is ``snapinit`` (bootstrap/init), never in a snapshot; the
snapshot holds PID 2 and its descendants.

``inproc``  Python runtimes: the agent (bootstrap/native, ``libsnapagent.so``) is a
            thread of the runtime's own interpreter, PID 2, loaded by the launcher
            (bootstrap/python/_snapstart_runtime.py, bootstrap/inproc.py). One
            process per snapshot.
``agent``   other runtimes: the agent is PID 2 (``snapagent --ctl-fd N``) and starts
            the runtime as its child on ``start``.

Host -> agent
-------------
    start   {argv: [str], env: {str: str}, cwd: str, init_type: "snap-start"|"on-demand",
             uid: int, gid: int, seccomp: bool, pythonpath: [str]}
            once, before init: the ``agent`` layout starts the runtime with it; the
            ``inproc`` launcher confines itself (uid/gid, no_new_privs, seccomp), then
            applies env/cwd/pythonpath and imports the runtime client.
    invoke  {id, payload: bin, deadline_ms: int, arn, trace_id?, client_context?, cognito?}
            queued; delivered on the runtime's next GET /invocation/next.
    resume  {populate?: {write: bin, read: bin}}
            after a restore: answer the runtime's parked GET /restore/next (200);
            for a runtime checkpointed in GET /invocation/next, answered by ``ready``.
            (v4) ``populate``: first fault in these ranges, as ``populate`` does.
    populate {write: bin, read: bin}
            (v4) fault in ranges of the runtime's memory now (a clone parked ahead of
            demand): each a bin of little-endian u64 (start, length) pairs;
            ``write`` ranges get private copies (MADV_POPULATE_WRITE), ``read`` ones
            page-table entries (MADV_POPULATE_READ). inproc layout only; no reply; a
            range that fails is skipped.
    ping    {}  -> pong

Agent -> host
-------------
    hello          {v: int, layout: "inproc"|"agent"}   first frame, once
    ready          {}  init (or after a resume, the after-restore phase) is done: the
                       runtime asked for its first invocation
    snapshot       {}  the runtime called GET /restore/next (init and before-snapshot
                       hooks are done); the tree is quiescent and may be dumped
    init_error     {type, body: bin}       POST /init/error
    restore_error  {type, body: bin}       POST /restore/error
    response       {id, payload: bin}      POST /invocation/{id}/response (after a
                                            streamed one: empty, the body went as chunks)
    stream         {id, content_type}      (v3) the runtime began a streamed response
                                            (Lambda-Runtime-Function-Response-Mode:
                                            streaming); the body follows as
    stream_chunk   {id, data: bin}         (v3) chunks, in order, as they arrive (at most
                                            20 MiB in all); then ``response``, or ``error``
                                            (the runtime's error trailers, decoded, or
                                            Function.ResponseSizeTooLarge)
    error          {id, type, body: bin}   POST /invocation/{id}/error (or an agent-side
                                            failure such as Function.ResponseSizeTooLarge)
    log            {data: bin}             the runtime's stdout/stderr, in order; output
                                            written before a response/error/exit frame is
                                            sent before that frame
    exit           {status: int, inflight: str|None}
                                           the runtime exited (exit code, or -signal);
                                           ``inflight``: the request id it was running
    pong           {}
    fatal          {message}               the agent itself failed; it exits next

A sandbox whose channel reaches EOF without ``exit`` died abruptly (killed, or the
in-process runtime called ``os._exit``); the host then reads the exit status of the
sandbox's PID 1 itself.

This module is imported by the host and by the Python launcher (bootstrap/inproc.py);
the agent (bootstrap/native) implements the same frames in C. It must stay
dependency-light (msgpack).
"""

from __future__ import annotations

import socket
import struct

import msgpack

__all__ = ["VERSION", "SUPPORTED", "MAX_FRAME", "ProtocolError", "encode", "FrameReader",
           "send", "recv", "recv_async"]

VERSION = 4
SUPPORTED = frozenset({2, 3, 4})
MAX_FRAME = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """A malformed or oversized frame, or the peer closed the channel.

    The host translates it into a ``SandboxError`` at its boundary (sandbox.py); the
    agent exits on one.
    """


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


async def _recv_exact_async(loop, sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, min(n - len(buf), 1 << 20))
        if not chunk:
            raise ProtocolError("channel closed by peer")
        buf += chunk
    return bytes(buf)


async def recv_async(loop, sock: socket.socket) -> dict:
    """``recv`` on an event loop (a non-blocking socket). Like ``recv`` it reads no
    byte past the frame, so the blocking reader can take over after it."""
    (n,) = _HEADER.unpack(await _recv_exact_async(loop, sock, 4))
    if n > MAX_FRAME:
        raise ProtocolError(f"frame of {n} bytes exceeds {MAX_FRAME}")
    return _decode(await _recv_exact_async(loop, sock, n))
