"""CRIU's RPC for the restore request, encoded without protobuf.

A restore is on every restored start's path, and in a one-shot process (the CLI)
importing protobuf and pycriu's generated modules costs ~10 ms of CPU that the
restore waits for. The restore request and its answer use a handful of fields of
CRIU's RPC schema (``images/rpc.proto`` in CRIU's tree), whose field numbers never
change (protobuf's rule; CRIU only adds fields), so they are encoded here by hand.
Everything else (dump, check, version, the publish path) keeps using pycriu.
``tests/unit/test_criu_rpc.py`` checks this module against pycriu's own messages.

Messages (protobuf 2 wire format: varint key ``field << 3 | wire type``)::

    criu_req   { 1: type (enum criu_req_type, RESTORE = 2), 2: opts (criu_opts) }
    criu_opts  {  1: images_dir_fd int32 (required; -1: use images_dir)
                 68: images_dir string          (CRIU >= 4.0)
                  5: tcp_established bool
                  9: log_level int32            10: log_file string
                 17: work_dir_fd int32
                 27: inherit_fd repeated { 1: key string, 2: fd int32 }
                 34: manage_cgroups_mode enum   (IGNORE = 0)
                 64: network_lock enum          (NFTABLES = 2, SKIP = 3 from 4.0)
                 72: mmap_page_image bool       (snapstart's patch 0003) }
    criu_resp  { 1: type enum, 2: success bool, 4: restore { 1: pid int32 },
                 7: cr_errno int32, 9: cr_errmsg string, others skipped }

A CRIU that does not know a field (an older one: 68, 72) skips it, as protobuf
readers do; ``images_dir_fd`` is therefore always sent (a descriptor of this
process, which criu opens through /proc).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..protowire import I32, I64, LEN, VARINT, WireError, fields

__all__ = ["RESTORE", "RestoreOpts", "Response", "encode_restore", "decode_response",
           "RpcDecodeError"]

RESTORE = 2


class RpcDecodeError(ValueError):
    """A CRIU answer that is not a well-formed criu_resp."""


@dataclass(frozen=True)
class RestoreOpts:
    images_dir_fd: int
    work_dir_fd: int
    log_file: str
    log_level: int
    network_lock: int
    inherit_fd: tuple[tuple[str, int], ...] = ()
    tcp_established: bool = True
    manage_cgroups_mode: int = 0
    mmap_page_image: bool = False
    images_dir: str | None = None


@dataclass(frozen=True)
class Response:
    type: int
    success: bool
    pid: int | None = None
    cr_errno: int | None = None
    cr_errmsg: str | None = None
    unknown_fields: tuple[int, ...] = field(default=())


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64                  # int32/int64 negatives: ten bytes, two's complement
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(num: int, wire: int) -> bytes:
    return _varint(num << 3 | wire)


def _int(num: int, value: int) -> bytes:
    return _key(num, VARINT) + _varint(value)


def _bytes(num: int, value: bytes) -> bytes:
    return _key(num, LEN) + _varint(len(value)) + value


def encode_restore(opts: RestoreOpts) -> bytes:
    """A serialized criu_req asking for a restore with ``opts``."""
    o = bytearray(_int(1, opts.images_dir_fd))
    o += _int(5, int(opts.tcp_established))
    o += _int(9, opts.log_level)
    o += _bytes(10, opts.log_file.encode())
    o += _int(17, opts.work_dir_fd)
    for key, fd in opts.inherit_fd:
        o += _bytes(27, _bytes(1, key.encode()) + _int(2, fd))
    o += _int(34, opts.manage_cgroups_mode)
    o += _int(64, opts.network_lock)
    if opts.images_dir is not None:
        o += _bytes(68, opts.images_dir.encode())
    if opts.mmap_page_image:
        o += _int(72, 1)
    return _int(1, RESTORE) + _bytes(2, bytes(o))


def _int32(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def decode_response(buf: bytes) -> Response:
    """A criu_resp; RpcDecodeError when required fields are missing or it is garbled."""
    rtype: int | None = None
    success: bool | None = None
    pid = errno = None
    errmsg = None
    unknown: list[int] = []
    try:
        parsed = list(fields(buf))
    except WireError as exc:
        raise RpcDecodeError(str(exc)) from None
    for num, wire, value in parsed:
        if wire in (I64, I32):
            continue                        # no fixed-size field is read here
        if wire == VARINT and isinstance(value, int) and num in (1, 2, 7):
            if num == 1:
                rtype = value
            elif num == 2:
                success = bool(value)
            else:
                errno = _int32(value)
        elif wire == LEN and isinstance(value, bytes) and num in (4, 9):
            if num == 9:
                errmsg = value.decode("utf-8", "replace")
                continue
            try:
                restore = list(fields(value))
            except WireError as exc:
                raise RpcDecodeError(str(exc)) from None
            for sub, sub_wire, sub_value in restore:
                if sub == 1 and sub_wire == VARINT and isinstance(sub_value, int):
                    pid = _int32(sub_value)
        else:
            unknown.append(num)
    if rtype is None or success is None:
        raise RpcDecodeError("criu_resp without its required type and success")
    return Response(type=rtype, success=success, pid=pid, cr_errno=errno, cr_errmsg=errmsg,
                    unknown_fields=tuple(unknown))
