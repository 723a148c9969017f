"""`snapstart deploy` (issue 15): a SAM template publishes its functions (a directory
and a .zip CodeUri, SnapStart on and off) and writes their triggers; deploying again
changes nothing; a one-line change republishes one function; a broken template
changes nothing at all."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from leaks import cli  # noqa: E402

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_criu]
PROJECT = Path(__file__).resolve().parents[2]
FUNCTIONS = PROJECT / "tests" / "functions"

TEMPLATE = """\
Transform: AWS::Serverless-2016-10-31
Parameters:
  Greeting: {Type: String, Default: hi}
Globals:
  Function: {Runtime: python3.11, Timeout: 10}
Resources:
  Hello:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: hello
      Handler: app.handler
      AutoPublishAlias: live
      ReservedConcurrentExecutions: 3
      Environment: {Variables: {GREETING: !Sub "${Greeting} from ${AWS::StackName}"}}
      FunctionUrlConfig: {AuthType: NONE}
      Events:
        Get: {Type: HttpApi, Properties: {Path: "/hello/{name}", Method: GET}}
        Tick: {Type: Schedule, Properties: {Schedule: rate(5 minutes)}}
  Zipped:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: marker.zip
      Handler: app.handler
      SnapStart: {ApplyOn: None}
"""


def _cli(settings, *args: str) -> subprocess.CompletedProcess:
    return cli(settings, *args, check=False, timeout=300)


@pytest.fixture
def app(tmp_path):
    root = tmp_path / "app"
    root.mkdir()
    shutil.copytree(FUNCTIONS / "hello", root / "hello")
    with zipfile.ZipFile(root / "marker.zip", "w") as zf:
        zf.write(FUNCTIONS / "marker" / "app.py", "app.py")
    (root / "template.yaml").write_text(TEMPLATE)
    root.chmod(0o755)
    tmp_path.chmod(0o755)
    return root


def test_deploy_is_idempotent_and_publishes_only_what_changed(manager, settings, app):
    template = str(app / "template.yaml")
    dry = _cli(settings, "deploy", template, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would publish Hello (new)" in dry.stdout and not manager.registry.functions()
    first = _cli(settings, "deploy", template, "--json", "--stack-name", "demo")
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["published"] == {"Hello": 1, "Zipped": 1}
    hello = manager.registry.resolve("Hello", "live")
    assert hello.version == "1" and hello.snapshot is not None
    assert hello.config.environment["GREETING"] == "hi from demo"
    assert manager.registry.resolve("Zipped").snapshot is None     # ApplyOn: None
    assert manager.invoke("Zipped").start_type == "cold"
    assert manager.invoke("Hello", qualifier="live").start_type == "restored"
    triggers = json.loads((settings.home / "triggers.json").read_text())
    assert [r["path"] for r in triggers["http_routes"]] == ["/hello/{name}"]
    assert triggers["function_urls"][0]["function"] == "Hello"
    assert triggers["schedules"][0]["expression"] == "rate(5 minutes)"
    assert json.loads((settings.home / "concurrency.json").read_text())
    # unchanged: nothing new
    again = json.loads(_cli(settings, "deploy", template, "--json", "--stack-name", "demo").stdout)
    assert again["published"] == {} and again["unchanged"] == {"Hello": 1, "Zipped": 1}
    # one line of one function changed: only it is published, its alias moves
    code = app / "hello" / "app.py"
    code.write_text(code.read_text() + "\nEXTRA = 1\n")
    third = json.loads(_cli(settings, "deploy", template, "--json", "--stack-name", "demo").stdout)
    assert third["published"] == {"Hello": 2} and third["unchanged"] == {"Zipped": 1}
    assert manager.registry.resolve("Hello", "live").version == "2"
    # a broken template: one clear error, nothing changes
    (app / "template.yaml").write_text(TEMPLATE.replace("marker.zip", "missing.zip")
                                       .replace("CodeUri: hello", "CodeUri: hello\n      Foo: 1"))
    before = (settings.home / "triggers.json").read_text()
    bad = _cli(settings, "deploy", template)
    assert bad.returncode == 1 and "Resources.Zipped.Properties.CodeUri" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert (settings.home / "triggers.json").read_text() == before
    assert manager.registry.versions("Hello") == [1, 2]


def test_publish_accepts_a_zip_and_refuses_a_zip_slip(manager, settings, tmp_path):
    good = tmp_path / "fn.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.write(FUNCTIONS / "hello" / "app.py", "app.py")
    proc = _cli(settings, "publish", str(good), "--name", "zipped", "--handler", "app.handler")
    assert proc.returncode == 0, proc.stderr
    assert manager.invoke("zipped").start_type == "restored"
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../etc/evil.py", "x = 1")
    proc = _cli(settings, "publish", str(evil), "--name", "evil", "--handler", "app.handler")
    assert proc.returncode == 1 and "zip-slip" in proc.stderr
    assert "evil" not in manager.registry.functions()
    assert not list(Path("/tmp").glob("snapstart-zip-*"))
