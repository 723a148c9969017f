"""``invoke_remote``: the CLI's Invoke API client (stdlib http.client, no boto3);
``invoke_remote_stream``: InvokeWithResponseStream (its event stream decoded by botocore).

Returns an ``InvokeResult`` read from the response (its headers carry what the
server's result held); API errors come back as the matching ``SnapStartError``
(typed from ``x-amzn-ErrorType``).
"""

from __future__ import annotations

import base64
import http.client
import json
import urllib.parse

from ..errors import (FunctionNotFoundError, InvalidNameError, PayloadError, SnapStartError,
                      ThrottledError)
from ..results import InvokeResult, StartType

__all__ = ["invoke_remote", "invoke_remote_stream"]


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _api_error(status: int, error_type: str, body: bytes, retry_after: str | None) -> SnapStartError:
    try:
        data = json.loads(body)
        message = str(data.get("message") or data.get("Message") or "")
        reason = data.get("Reason")
    except (ValueError, AttributeError, UnicodeDecodeError):
        message, reason = body.decode("utf-8", "replace")[:500], None
    message = message or f"HTTP {status}"
    if error_type == "ResourceNotFoundException":
        return FunctionNotFoundError(message)
    if error_type == "TooManyRequestsException":
        return ThrottledError(message, reason=reason or "ConcurrentInvocationLimitExceeded",
                              retry_after=int(retry_after or 1))
    if error_type in ("InvalidRequestContentException", "RequestTooLargeException"):
        return PayloadError(message, error_type=error_type)
    if error_type in ("InvalidParameterValueException", "ValidationException"):
        return InvalidNameError(message, error_type=error_type)
    return SnapStartError(message, error_type=error_type or "ServiceException")


def invoke_remote(endpoint: str, name: str, qualifier: str | None, body: bytes, *,
                  tail: bool = False, invocation_type: str = "RequestResponse",
                  timeout_s: float = 960.0) -> InvokeResult:
    url = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if url.scheme not in ("http", "https") or not url.hostname:
        raise SnapStartError(f"invalid endpoint {endpoint!r}", error_type="InvalidEndpoint")
    conn_cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    path = f"{url.path.rstrip('/')}/2015-03-31/functions/{urllib.parse.quote(name, safe='')}/invocations"
    if qualifier:
        path += "?Qualifier=" + urllib.parse.quote(qualifier, safe="")
    headers = {"Content-Type": "application/json", "X-Amz-Invocation-Type": invocation_type,
               "X-Amz-Log-Type": "Tail" if tail else "None"}
    conn = conn_cls(url.hostname, url.port, timeout=timeout_s)
    try:
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as exc:
            raise SnapStartError(f"cannot reach {endpoint}: {exc}",
                                 error_type="EndpointConnectionError") from exc
    finally:
        conn.close()
    if resp.status >= 400:
        raise _api_error(resp.status, resp.getheader("x-amzn-ErrorType", "").split(":")[0],
                         data, resp.getheader("Retry-After"))
    logs = b""
    log_result = resp.getheader("X-Amz-Log-Result")
    if log_result:
        try:
            logs = base64.b64decode(log_result)
        except ValueError:
            logs = b""
    mem = _float(resp.getheader("X-Snapstart-Max-Memory-Used-Mb"))
    try:
        start_type = StartType(resp.getheader("X-Snapstart-Start-Type", "warm"))
    except ValueError:
        start_type = StartType.WARM
    return InvokeResult(
        request_id=resp.getheader("x-amzn-RequestId", ""), payload=data,
        function_error=resp.getheader("X-Amz-Function-Error"),
        duration_ms=_float(resp.getheader("X-Snapstart-Duration-Ms")) or 0.0,
        executed_version=resp.getheader("X-Amz-Executed-Version", ""), logs=logs,
        start_type=start_type,
        init_duration_ms=_float(resp.getheader("X-Snapstart-Init-Duration-Ms")),
        restore_duration_ms=_float(resp.getheader("X-Snapstart-Restore-Duration-Ms")),
        max_memory_used_mb=int(mem) if mem is not None else None)


def invoke_remote_stream(endpoint: str, name: str, qualifier: str | None, body: bytes,
                         sink, *, tail: bool = False, timeout_s: float = 960.0) -> InvokeResult:
    """InvokeWithResponseStream: each PayloadChunk goes to ``sink.chunk`` as it arrives
    (botocore's event stream decoder); the result carries InvokeComplete's error and
    log tail, with an empty payload (or the error's, for a function error)."""
    from botocore.eventstream import EventStreamBuffer

    url = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if url.scheme not in ("http", "https") or not url.hostname:
        raise SnapStartError(f"invalid endpoint {endpoint!r}", error_type="InvalidEndpoint")
    conn_cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    path = (f"{url.path.rstrip('/')}/2021-11-15/functions/{urllib.parse.quote(name, safe='')}"
            "/response-streaming-invocations")
    if qualifier:
        path += "?Qualifier=" + urllib.parse.quote(qualifier, safe="")
    headers = {"Content-Type": "application/json", "X-Amz-Log-Type": "Tail" if tail else "None"}
    conn = conn_cls(url.hostname, url.port, timeout=timeout_s)
    complete: dict = {}
    try:
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            if resp.status >= 400:
                raise _api_error(resp.status, resp.getheader("x-amzn-ErrorType", "").split(":")[0],
                                 resp.read(), resp.getheader("Retry-After"))
            sink.begin(resp.getheader("X-Amzn-Remapped-Content-Type") or "application/octet-stream")
            decoder = EventStreamBuffer()
            while not complete:
                data = resp.read1(65536)
                if not data:
                    break
                decoder.add_data(data)
                for event in decoder:
                    kind = event.headers.get(":event-type")
                    if kind == "PayloadChunk":
                        sink.chunk(event.payload)
                    elif kind == "InvokeComplete":
                        complete = json.loads(event.payload or b"{}") or {"done": True}
        except OSError as exc:
            raise SnapStartError(f"cannot reach {endpoint}: {exc}",
                                 error_type="EndpointConnectionError") from exc
    finally:
        conn.close()
    if not complete:
        raise SnapStartError("the response stream ended before InvokeComplete",
                             error_type="ServiceException")
    logs = b""
    if complete.get("LogResult"):
        try:
            logs = base64.b64decode(complete["LogResult"])
        except ValueError:
            logs = b""
    error = complete.get("ErrorCode")
    payload = (json.dumps({"errorType": error, "errorMessage": complete.get("ErrorDetails", "")})
               .encode() if error else b"")
    return InvokeResult(request_id=resp.getheader("x-amzn-RequestId", ""), payload=payload,
                        function_error="Unhandled" if error else None, duration_ms=0.0,
                        executed_version=resp.getheader("X-Amz-Executed-Version", ""),
                        logs=logs, stream_content_type=resp.getheader(
                            "X-Amzn-Remapped-Content-Type"))
