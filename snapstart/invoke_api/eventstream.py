"""AWS event stream messages (``application/vnd.amazon.eventstream``), the body of an
``InvokeWithResponseStream`` response; what boto3/botocore's ``EventStream`` decodes.

Encoding only (botocore decodes, in the tests and the CLI's remote ``--stream``).
One message::

    +-------------+--------------+-------------+---------+---------+-------------+
    | u32 total   | u32 headers  | u32 CRC32   | headers | payload | u32 CRC32   |
    | length (BE) | length (BE)  | of the 8    |         |         | of all that |
    |             |              | bytes before|         |         | precedes    |
    +-------------+--------------+-------------+---------+---------+-------------+

A header: u8 name length, name (ASCII), u8 value type (7 = string), u16 value length
(BE), value (UTF-8). Lambda's events: every message has ``:message-type: event``,
``:event-type`` and ``:content-type``:

    PayloadChunk    application/octet-stream   payload: the function's bytes, as they came
    InvokeComplete  application/json           payload: {"ErrorCode"?, "ErrorDetails"?,
                                                "LogResult"?} -- the last message
"""

from __future__ import annotations

import json
import struct
import zlib

__all__ = ["message", "payload_chunk", "invoke_complete"]

_STRING = 7


def _headers(headers: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        raw_name, raw_value = name.encode("ascii"), value.encode()
        out += struct.pack(">B", len(raw_name)) + raw_name
        out += struct.pack(">BH", _STRING, len(raw_value)) + raw_value
    return bytes(out)


def message(headers: dict[str, str], payload: bytes) -> bytes:
    """One encoded event stream message."""
    head = _headers(headers)
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack(">II", total, len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + head + payload
    return body + struct.pack(">I", zlib.crc32(body))


def payload_chunk(data: bytes) -> bytes:
    return message({":event-type": "PayloadChunk", ":content-type": "application/octet-stream",
                    ":message-type": "event"}, data)


def invoke_complete(*, error_code: str | None = None, error_details: str | None = None,
                    log_result: str | None = None) -> bytes:
    fields = {key: value for key, value in (("ErrorCode", error_code),
                                            ("ErrorDetails", error_details),
                                            ("LogResult", log_result)) if value}
    return message({":event-type": "InvokeComplete", ":content-type": "application/json",
                    ":message-type": "event"}, json.dumps(fields).encode())
