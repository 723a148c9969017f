"""Lambda's Invoke API (and enough of its control plane for boto3 / aws-cli) over HTTP.

    names.py    FunctionName path parameter: name, NAME:QUAL, partial or full ARN
    errors.py   API errors on the wire (x-amzn-ErrorType + {"Type", "message"} bodies)
    metrics.py  Prometheus metrics (GET /metrics)
    orphans.py  startup cleanup of sandboxes left by a crashed server
    server.py   the aiohttp application and ``serve()``
    eventstream.py  InvokeWithResponseStream's event stream encoding
    sink.py     ``LoopSink``: a streamed response handed to the event loop
    client.py   ``invoke_remote``: the CLI's stdlib client (no boto3); its streaming
                twin decodes event streams with botocore

Data flow: HTTP -> server -> Manager (threads) -> sandbox. Nothing here reaches
into sandboxes except orphans.py, which only kills leftovers at startup.
"""

__all__ = ["serve", "create_app", "invoke_remote"]


def __getattr__(name: str):  # lazy: the CLI imports client without aiohttp
    if name in ("serve", "create_app"):
        from . import server
        return getattr(server, name)
    if name == "invoke_remote":
        from .client import invoke_remote
        return invoke_remote
    raise AttributeError(name)
