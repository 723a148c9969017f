"""SAM templates (deploy/template.py) and zip packages (deploy/package.py): parsing,
intrinsics, validation errors naming the resource and property; no sandboxes."""

from __future__ import annotations

import stat
import textwrap
import zipfile
from pathlib import Path

import pytest

from snapstart.deploy.package import MAX_UNZIPPED, unpack_zip
from snapstart.deploy.template import plan
from snapstart.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sam-app" / "template.yaml"


def _template(tmp_path: Path, body: str, code: dict[str, str] | None = None) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for name, text in (code or {"app.py": "def handler(e, c):\n    return e\n"}).items():
        (src / name).write_text(text)
    path = tmp_path / "template.yaml"
    path.write_text(textwrap.dedent(body))
    return path


HEAD = """\
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage: {Type: String, Default: dev, AllowedValues: [dev, prod]}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
Resources:
"""


def test_the_sample_app_resolves_every_intrinsic():
    p = plan(EXAMPLE)
    assert p.warnings == ["Outputs: ignored"]
    api, worker, web = p.functions
    env = api.config.environment
    assert env["GREETING"] == "hello from sam-app (dev)" and env["STAGE"] == "dev"
    assert env["WORKER_ARN"] == "arn:aws:lambda:us-east-1:000000000000:function:Worker"
    assert env["LOG_LEVEL"] == "DEBUG" and api.alias == "live" and api.snap_start
    assert [r["path"] for r in api.http_routes] == ["/items/{id}", "/items/{id}"]
    assert api.function_url and api.function_url["qualifier"] == "live"
    assert worker.reserved == 4 and worker.schedules[0]["expression"] == "rate(1 minute)"
    assert {m["type"] for m in worker.mappings} == {"MQ", "SQS"}
    assert web.config.runtime == "node" and web.config.memory_mb == 256
    prod = plan(EXAMPLE, {"Stage": "prod"})
    assert prod.functions[0].config.environment["LOG_LEVEL"] == "WARNING"


def test_names_parameters_globals_and_ignored_properties(tmp_path):
    path = _template(tmp_path, HEAD + """\
      Fn:
        Type: AWS::Serverless::Function
        Properties:
          FunctionName: !Join ["-", [orders, !Ref Stage]]
          CodeUri: src
          Handler: app.handler
          Runtime: python3.12
          MemorySize: 1024
          Timeout: 30
          EphemeralStorage: {Size: 1024}
          SnapStart: {ApplyOn: None}
          Tracing: Active
          Layers: [arn:aws:lambda:us-east-1:1:layer:x:1]
      Bucket:
        Type: AWS::S3::Bucket
    """)
    p = plan(path, {"Stage": "prod"})
    (fn,) = p.functions
    assert fn.config.name == "orders-prod" and fn.config.memory_mb == 1024
    assert fn.config.timeout_s == 30 and fn.config.ephemeral_storage_mb == 1024
    assert not fn.snap_start
    assert p.warnings == ["Resources.Fn.Properties.Layers: ignored",
                          "Resources.Fn.Properties.Tracing: ignored",
                          "Resources.Bucket: AWS::S3::Bucket ignored"]


@pytest.mark.parametrize("body, message", [
    ("Resources: [\n", "not a valid YAML/JSON template"),
    ("Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n"
     "      CodeUri: src\n      Handler: app.handler\n      Runtime: python3.11\n"
     "      Environment: {Variables: {A: !Bogus x}}\n",
     "Resources.Fn.Properties.Environment.Variables.A (!Bogus): unsupported or unknown"),
    ("Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n"
     "      CodeUri: src\n      Handler: missing.handler\n      Runtime: python3.11\n",
     "Resources.Fn.Properties.Handler: 'missing.handler': no missing.py"),
    ("Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n"
     "      CodeUri: src\n      Handler: app.handler\n      Runtime: java21\n",
     "Resources.Fn.Properties.Runtime: 'java21' is not supported"),
    ("Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n"
     "      CodeUri: src\n      Handler: app.handler\n      Runtime: python3.11\n"
     "      MemorySize: 64\n", "Resources.Fn.Properties.MemorySize: must be between 128"),
    ("Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n"
     "      CodeUri: src\n      Handler: app.handler\n      Runtime: python3.11\n"
     "      Environment: {Variables: {A: !Ref Nope}}\n", "Ref to 'Nope'"),
    ("Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n"
     "      CodeUri: nowhere\n      Handler: app.handler\n      Runtime: python3.11\n",
     "Resources.Fn.Properties.CodeUri:"),
    ("Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n"
     "      CodeUri: src\n      Handler: app.handler\n      Runtime: python3.11\n"
     "      Events:\n        E: {Type: Schedule, Properties: {}}\n",
     "Resources.Fn.Properties.Events.E.Properties: Schedule needs Schedule"),
    ("Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n"
     "      CodeUri: src\n      Handler: app.handler\n      Runtime: python3.11\n"
     "      Events:\n        E: {Type: Schedule, Properties: {Schedule: 'cron(0 12 * * * *)'}}\n",
     "Resources.Fn.Properties.Events.E.Properties: "),
    ("Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n"
     "      CodeUri: src\n      Handler: app.handler\n      Runtime: python3.11\n"
     "      Events:\n        E: {Type: HttpApi, Properties: {Path: /2015-03-31/x, Method: GET}}\n",
     "Resources.Fn.Properties.Events.E.Properties: "),
])
def test_a_broken_template_is_one_clear_error(tmp_path, body, message):
    with pytest.raises(ConfigError) as info:
        plan(_template(tmp_path, body))
    assert message in info.value.message


def test_unknown_parameter_overrides_and_disallowed_values(tmp_path):
    path = _template(tmp_path, HEAD + """\
      Fn:
        Type: AWS::Serverless::Function
        Properties: {CodeUri: src, Handler: app.handler, Runtime: python3.11}
    """)
    with pytest.raises(ConfigError, match="unknown parameter"):
        plan(path, {"Nope": "1"})
    with pytest.raises(ConfigError, match="not one of"):
        plan(path, {"Stage": "qa"})


def _zip(path: Path, entries: list[tuple[str, bytes, int]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_zip_packages_unpack_and_refuse_what_lambda_refuses(tmp_path):
    good = _zip(tmp_path / "good.zip", [("app.py", b"x = 1\n", stat.S_IFREG | 0o644),
                                        ("bin/run", b"#!/bin/sh\n", stat.S_IFREG | 0o755)])
    out = unpack_zip(good, tmp_path / "out")
    assert (out / "app.py").read_bytes() == b"x = 1\n"
    assert (out / "bin" / "run").stat().st_mode & 0o111
    for name, entries, message in [
        ("slip", [("../evil.py", b"", stat.S_IFREG | 0o644)], "zip-slip"),
        ("abs", [("/etc/evil", b"", stat.S_IFREG | 0o644)], "absolute"),
        ("link", [("l", b"/etc/passwd", stat.S_IFLNK | 0o777)], "symbolic link"),
        ("dev", [("d", b"", stat.S_IFCHR | 0o644)], "device file"),
        ("dup", [("a", b"1", stat.S_IFREG | 0o644), ("a", b"2", stat.S_IFREG | 0o644)],
         "appears twice"),
    ]:
        bad = _zip(tmp_path / f"{name}.zip", entries)
        with pytest.raises(ConfigError) as info:
            unpack_zip(bad, tmp_path / f"out-{name}")
        assert message in info.value.message
        assert not (tmp_path / f"out-{name}").exists()
    # a zip that declares more than 250 MB unzipped: refused before anything is written
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("zeros", "w", force_zip64=True) as f:
            for _ in range(MAX_UNZIPPED // (1 << 20) + 1):
                f.write(bytes(1 << 20))
    with pytest.raises(ConfigError, match="exceeds Lambda's limit"):
        unpack_zip(big, tmp_path / "out-big")
    assert not (tmp_path / "out-big").exists()
    with pytest.raises(ConfigError, match="not a readable zip"):
        unpack_zip(tmp_path / "good.zip.missing", tmp_path / "x")
