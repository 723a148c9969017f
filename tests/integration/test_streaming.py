"""Response streaming (issue 13): a Node.js function using awslambda.streamifyResponse,
through a real restored clone, to boto3's invoke_with_response_stream against
`snapstart serve`, and to `snapstart invoke --stream`. No timing is asserted: the
function waits, after its first write, for a file the caller creates only once it
holds the first bytes, so "gate-open" in the response proves the bytes arrived first."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from leaks import serve_env  # noqa: E402
from leaks import cli as _cli  # noqa: E402
from test_serve import serve  # noqa: E402,F401 - the serve fixture

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"
PROJECT = Path(__file__).resolve().parent.parent.parent


def _publish(home, directory: str, name: str, *args: str) -> None:
    _cli(home, "publish", str(FUNCTIONS / directory), "--name", name, *args, "--json")


def _events(response) -> tuple[list[bytes], dict]:
    chunks, complete = [], None
    for event in response["EventStream"]:
        if "PayloadChunk" in event:
            chunks.append(event["PayloadChunk"]["Payload"])
        elif "InvokeComplete" in event:
            complete = event["InvokeComplete"]
    assert complete is not None, "no InvokeComplete"
    return chunks, complete


def test_boto3_streams_a_node_function_from_a_restored_clone(home, serve):
    _publish(home, "node-stream", "streamer", "--runtime", "node", "--handler", "index.handler")
    _publish(home, "hello", "hello", "--handler", "app.handler")
    server = serve()
    client = server.client()
    code = home.home / "functions" / "streamer" / "versions" / "1" / "code"
    assert (code / "index.js").exists()
    response = client.invoke_with_response_stream(
        FunctionName="streamer", Payload=json.dumps({"gate": "gate-1"}), LogType="Tail")
    assert response["StatusCode"] == 200 and response["ExecutedVersion"] == "1"
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-remapped-content-type"] == "text/plain"
    chunks = []
    complete = None
    for event in response["EventStream"]:
        if "PayloadChunk" in event:
            chunks.append(event["PayloadChunk"]["Payload"])
            if len(chunks) == 1:
                assert chunks[0] == b"first\n"
                (code / "gate-1").write_text("open")     # only now may the handler go on
        elif "InvokeComplete" in event:
            complete = event["InvokeComplete"]
    (code / "gate-1").unlink()
    assert b"".join(chunks) == b"first\ngate-open\nsecond\n"
    assert complete is not None and "ErrorCode" not in complete
    assert b"node-stream: streaming" in base64.b64decode(complete["LogResult"])

    # an error after the first bytes: Lambda's error trailers -> InvokeComplete
    chunks, complete = _events(client.invoke_with_response_stream(
        FunctionName="streamer", Payload=json.dumps({"fail": True})))
    assert b"".join(chunks) == b"first\n"
    assert complete["ErrorCode"] == "Error" and complete["ErrorDetails"] == "broke mid-stream"

    # past Lambda's 20 MiB: what fit arrives, then Function.ResponseSizeTooLarge
    chunks, complete = _events(client.invoke_with_response_stream(
        FunctionName="streamer", Payload=json.dumps({"mib": 21})))
    assert len(b"".join(chunks)) <= 20 << 20
    assert complete["ErrorCode"] == "Function.ResponseSizeTooLarge"

    # the plain Invoke API gets a streamed response whole
    plain = client.invoke(FunctionName="streamer", Payload=b"{}")
    assert plain["Payload"].read() == b"first\nsecond\n" and "FunctionError" not in plain

    # a function that does not stream: its response is one chunk, as on Lambda
    chunks, complete = _events(client.invoke_with_response_stream(
        FunctionName="hello", Payload=json.dumps({"name": "s"})))
    assert len(chunks) == 1 and json.loads(chunks[0])["event"] == {"name": "s"}
    assert "ErrorCode" not in complete

    # API errors are ordinary ones, and the server stays up
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke_with_response_stream(FunctionName="nope", Payload=b"{}")
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.invoke_with_response_stream(FunctionName="streamer", Payload=b"{}",
                                           InvocationType="Event")

    # the CLI, through the server: the chunks as they arrive, then a newline
    cli = _cli(home, "invoke", "streamer", "--stream", "--endpoint", server.url)
    assert cli.stdout == "first\nsecond\n\n"


def test_cli_stream_prints_chunks_locally(home):
    _publish(home, "node-stream", "streamer", "--runtime", "node", "--handler", "index.handler")
    proc = subprocess.run([sys.executable, "-m", "snapstart.cli", "invoke", "streamer",
                           "--stream"], env=serve_env(home), capture_output=True, text=True,
                          timeout=180, cwd=str(PROJECT))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "first\nsecond\n\n"
    assert "Restore Duration" in proc.stderr           # the REPORT line, on stderr
    proc = subprocess.run([sys.executable, "-m", "snapstart.cli", "invoke", "streamer",
                           "--stream", "--repeat", "2"], env=serve_env(home),
                          capture_output=True, text=True, timeout=60, cwd=str(PROJECT))
    assert proc.returncode == 2 and "--stream" in proc.stderr
