"""AWS SAM templates: read, resolve, validate -> a ``Plan`` of functions and triggers.

Reading: YAML or JSON through ``cfn_tools`` (awslabs' cfn-flip), which turns
CloudFormation's short-form tags (``!Ref``, ``!Sub``, ``!GetAtt``, ...) into their long
form. Intrinsics resolved (anything else is an error naming where it is):

    Ref                  a parameter (Default, or --parameter-overrides), a pseudo
                         parameter (AWS::Region, AWS::AccountId, AWS::StackName,
                         AWS::Partition, AWS::URLSuffix, AWS::NoValue), or a function's
                         logical ID (-> its function name)
    Fn::Sub              ${Param}, ${AWS::Region}, ${LogicalId}, ${LogicalId.Arn},
                         ${!Literal}; the two-element form with a variable map
    Fn::GetAtt           LogicalId.Arn (a function's ARN)
    Fn::Join, Fn::Select, Fn::Split, Fn::If (with Conditions: Fn::Equals, Fn::Not,
    Fn::And, Fn::Or, Condition), Fn::FindInMap (Mappings), Fn::Base64

Supported (everything else: one warning line per ignored resource or property):
``Transform: AWS::Serverless-2016-10-31``, ``Parameters``, ``Conditions``,
``Mappings``, ``Globals.Function``; ``AWS::Serverless::Function`` properties
FunctionName, CodeUri (directory or .zip, relative to the template), Handler, Runtime
(python3.x -> python, nodejs18.x-22.x -> node, provided.al2/al2023 -> provided),
MemorySize, Timeout, Environment.Variables, EphemeralStorage.Size, SnapStart.ApplyOn
(PublishedVersions; None -> cold starts only), AutoPublishAlias,
ReservedConcurrentExecutions, ProvisionedConcurrencyConfig
.ProvisionedConcurrentExecutions, FunctionUrlConfig (AuthType, InvokeMode, Cors),
EventInvokeConfig (MaximumRetryAttempts, MaximumEventAgeInSeconds,
DestinationConfig.OnSuccess/OnFailure with Type Lambda|SQS), Events of type HttpApi,
Api, Schedule, ScheduleV2, MQ, SQS. A function is named by its logical ID, as
``sam local`` does, unless FunctionName is set.

A template error is one ``ConfigError`` naming the resource and property; nothing is
deployed unless the whole template resolves and validates (apply.py).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Mapping

from ..config import FunctionConfig, validate_name
from ..errors import ConfigError, SnapStartError

__all__ = ["Plan", "FunctionPlan", "load_template", "plan"]

TRANSFORM = "AWS::Serverless-2016-10-31"
RUNTIMES = {**{f"python3.{n}": "python" for n in range(8, 15)},
            **{f"nodejs{n}.x": "node" for n in (18, 20, 22)},
            "provided.al2": "provided", "provided.al2023": "provided", "provided": "provided"}
FUNCTION_PROPS = {"FunctionName", "CodeUri", "Handler", "Runtime", "MemorySize", "Timeout",
                  "Environment", "EphemeralStorage", "SnapStart", "AutoPublishAlias",
                  "ReservedConcurrentExecutions", "ProvisionedConcurrencyConfig",
                  "FunctionUrlConfig", "Events", "EventInvokeConfig"}
EVENT_TYPES = {"HttpApi", "Api", "Schedule", "ScheduleV2", "MQ", "SQS"}
_NO_VALUE = object()


@dataclasses.dataclass
class FunctionPlan:
    logical_id: str
    config: FunctionConfig
    code: Path                       # a directory or a .zip
    snap_start: bool = True
    alias: str | None = None
    reserved: int | None = None
    provisioned: int | None = None
    function_url: dict[str, Any] | None = None
    http_routes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    schedules: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    mappings: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    destinations: dict[str, Any] | None = None


@dataclasses.dataclass
class Plan:
    stack: str
    functions: list[FunctionPlan]
    warnings: list[str]


def load_template(path: Path) -> dict:
    from cfn_tools import load_yaml   # also reads JSON (JSON is YAML)

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the template: {exc.strerror or exc}") from None
    try:
        data = load_yaml(text)
    except Exception as exc:  # noqa: BLE001 - yaml's errors have no common base we import
        first = " ".join(str(exc).split())[:300]
        raise ConfigError(f"{path}: not a valid YAML/JSON template: {first}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("Resources"), Mapping):
        raise ConfigError(f"{path}: a template needs a Resources section")
    return _plain(data)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _Resolver:
    def __init__(self, template: dict, params: dict[str, str], *, stack: str, region: str,
                 account: str, functions: dict[str, str]) -> None:
        self.t = template
        self.params = params
        self.pseudo = {"AWS::Region": region, "AWS::AccountId": account,
                       "AWS::StackName": stack, "AWS::Partition": "aws",
                       "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": _NO_VALUE}
        self.functions = functions        # logical ID -> function name
        self.region, self.account = region, account
        self.conditions: dict[str, bool] = {}

    def arn(self, logical: str) -> str:
        return (f"arn:aws:lambda:{self.region}:{self.account}:function:"
                f"{self.functions[logical]}")

    def condition(self, name: str, where: str) -> bool:
        if name not in self.conditions:
            conds = self.t.get("Conditions") or {}
            if name not in conds:
                raise ConfigError(f"{where}: unknown condition {name!r}")
            self.conditions[name] = False       # a cycle reads False, then is refused
            value = self.resolve(conds[name], f"Conditions.{name}")
            if not isinstance(value, bool):
                raise ConfigError(f"Conditions.{name}: must be Fn::Equals/And/Or/Not")
            self.conditions[name] = value
        return self.conditions[name]

    def ref(self, name: Any, where: str) -> Any:
        if not isinstance(name, str):
            raise ConfigError(f"{where}: Ref needs a name")
        if name in self.params:
            return self.params[name]
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.functions:
            return self.functions[name]
        raise ConfigError(f"{where}: Ref to {name!r}, which is not a parameter, a pseudo "
                          "parameter or a function of this template")

    def sub(self, arg: Any, where: str) -> str:
        if isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], Mapping):
            text, local = arg[0], {k: self.resolve(v, where) for k, v in arg[1].items()}
        elif isinstance(arg, str):
            text, local = arg, {}
        else:
            raise ConfigError(f"{where}: Fn::Sub takes a string or [string, {{vars}}]")
        if not isinstance(text, str):
            raise ConfigError(f"{where}: Fn::Sub's template must be a string")

        def one(m: re.Match) -> str:
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in local:
                return str(local[name])
            if "." in name:
                logical, attr = name.split(".", 1)
                return str(self.getatt([logical, attr], where))
            value = self.ref(name, where)
            if value is _NO_VALUE:
                raise ConfigError(f"{where}: ${{AWS::NoValue}} in Fn::Sub")
            return str(value)

        return re.sub(r"\$\{([^}]*)\}", one, text)

    def getatt(self, arg: Any, where: str) -> str:
        if isinstance(arg, str):
            arg = arg.split(".", 1)
        if not (isinstance(arg, list) and len(arg) == 2):
            raise ConfigError(f"{where}: Fn::GetAtt takes LogicalId.Attribute")
        logical, attr = arg
        if logical in self.functions and attr == "Arn":
            return self.arn(logical)
        raise ConfigError(f"{where}: Fn::GetAtt {logical}.{attr} is not supported "
                          "(a function's Arn is)")

    def resolve(self, value: Any, where: str) -> Any:
        if isinstance(value, list):
            out = [self.resolve(v, f"{where}[{i}]") for i, v in enumerate(value)]
            return [v for v in out if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg, where)
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg, where)
            if key.startswith("Fn::"):
                return self.intrinsic(key, arg, where)
        resolved: dict[str, Any] = {}
        for k, v in value.items():
            r = self.resolve(v, f"{where}.{k}")
            if r is not _NO_VALUE:
                resolved[k] = r
        return resolved

    def intrinsic(self, key: str, arg: Any, where: str) -> Any:
        at = f"{where} ({'!' + key[4:]})"
        if key == "Fn::Sub":
            return self.sub(arg, at)
        if key == "Fn::GetAtt":
            return self.getatt(arg, at)
        if key == "Fn::If":
            if not (isinstance(arg, list) and len(arg) == 3 and isinstance(arg[0], str)):
                raise ConfigError(f"{at}: Fn::If takes [condition, if-true, if-false]")
            return self.resolve(arg[1] if self.condition(arg[0], at) else arg[2], where)
        arg = self.resolve(arg, at)
        if key == "Fn::Join":
            if not (isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], list)):
                raise ConfigError(f"{at}: Fn::Join takes [delimiter, [values]]")
            return str(arg[0]).join(str(v) for v in arg[1])
        if key == "Fn::Select":
            try:
                return arg[1][int(arg[0])]
            except (TypeError, ValueError, IndexError, KeyError):
                raise ConfigError(f"{at}: Fn::Select takes [index, [values]] with the "
                                  "index in range") from None
        if key == "Fn::Split":
            if not (isinstance(arg, list) and len(arg) == 2):
                raise ConfigError(f"{at}: Fn::Split takes [delimiter, string]")
            return str(arg[1]).split(str(arg[0]))
        if key == "Fn::Equals":
            if not (isinstance(arg, list) and len(arg) == 2):
                raise ConfigError(f"{at}: Fn::Equals takes two values")
            return str(arg[0]) == str(arg[1])
        if key == "Fn::Not":
            if not (isinstance(arg, list) and len(arg) == 1 and isinstance(arg[0], bool)):
                raise ConfigError(f"{at}: Fn::Not takes [condition]")
            return not arg[0]
        if key in ("Fn::And", "Fn::Or"):
            if not (isinstance(arg, list) and arg and all(isinstance(v, bool) for v in arg)):
                raise ConfigError(f"{at}: {key} takes a list of conditions")
            return all(arg) if key == "Fn::And" else any(arg)
        if key == "Fn::FindInMap":
            try:
                return self.t["Mappings"][arg[0]][arg[1]][arg[2]]
            except (KeyError, TypeError, IndexError):
                raise ConfigError(f"{at}: Fn::FindInMap {arg!r} not in Mappings") from None
        if key == "Fn::Base64":
            return base64.b64encode(str(arg).encode()).decode()
        raise ConfigError(f"{at}: unsupported or unknown intrinsic function")


def _parameters(template: dict, overrides: Mapping[str, str]) -> dict[str, str]:
    declared = template.get("Parameters") or {}
    unknown = set(overrides) - set(declared)
    if unknown:
        raise ConfigError(f"--parameter-overrides: unknown parameter(s) {', '.join(sorted(unknown))}")
    out = {}
    for name, spec in declared.items():
        spec = spec or {}
        if name in overrides:
            value = overrides[name]
        elif "Default" in spec:
            value = spec["Default"]
        else:
            raise ConfigError(f"Parameters.{name}: no Default and no override")
        allowed = spec.get("AllowedValues")
        if allowed and str(value) not in [str(a) for a in allowed]:
            raise ConfigError(f"Parameters.{name}: {value!r} is not one of {allowed}")
        pattern = spec.get("AllowedPattern")
        if pattern and not re.fullmatch(pattern, str(value)):
            raise ConfigError(f"Parameters.{name}: {value!r} does not match {pattern!r}")
        out[name] = str(value) if not isinstance(value, list) else value
    return out


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: must be an integer, not {value!r}") from None
    if not lo <= n <= hi:
        raise ConfigError(f"{where}: must be between {lo} and {hi}, not {n}")
    return n


def plan(path: Path, overrides: Mapping[str, str] | None = None, *, stack: str | None = None,
         region: str = "us-east-1", account: str = "000000000000") -> Plan:
    """Read ``path`` and resolve it into a Plan (module docstring)."""
    path = Path(path).resolve()
    template = load_template(path)
    warnings: list[str] = []
    transform = template.get("Transform")
    transforms: list[Any] = transform if isinstance(transform, list) else [transform]
    if TRANSFORM not in transforms:
        warnings.append(f"Transform {transform!r}: expected {TRANSFORM} (read as a SAM "
                        "template anyway)")
    for key in sorted(set(template) - {"AWSTemplateFormatVersion", "Transform", "Description",
                                       "Parameters", "Conditions", "Mappings", "Globals",
                                       "Resources"}):
        warnings.append(f"{key}: ignored")
    stack = stack or re.sub(r"[^A-Za-z0-9-]", "-", path.parent.name or "snapstart")
    params = _parameters(template, overrides or {})
    resources = template["Resources"]
    functions: dict[str, str] = {}
    for logical, res in resources.items():
        if not isinstance(res, Mapping) or "Type" not in res:
            raise ConfigError(f"Resources.{logical}: needs a Type")
        if res["Type"] == "AWS::Serverless::Function":
            functions[logical] = logical
    resolver = _Resolver(template, params, stack=stack, region=region, account=account,
                         functions=functions)
    # names first (FunctionName may Ref parameters), then everything else
    for logical in functions:
        props = resources[logical].get("Properties") or {}
        if "FunctionName" in props:
            name = resolver.resolve(props["FunctionName"], f"Resources.{logical}.FunctionName")
            try:
                functions[logical] = validate_name(str(name))
            except SnapStartError as exc:
                raise ConfigError(f"Resources.{logical}.FunctionName: {exc.message}") from None
    globals_fn = resolver.resolve((template.get("Globals") or {}).get("Function") or {},
                                  "Globals.Function")
    for key in set(template.get("Globals") or {}) - {"Function"}:
        warnings.append(f"Globals.{key}: ignored (only Globals.Function is supported)")
    for key in set(globals_fn) - FUNCTION_PROPS:
        warnings.append(f"Globals.Function.{key}: ignored")
    out: list[FunctionPlan] = []
    for logical, res in resources.items():
        if res["Type"] != "AWS::Serverless::Function":
            warnings.append(f"Resources.{logical}: {res['Type']} ignored")
            continue
        if "Condition" in res and not resolver.condition(res["Condition"], f"Resources.{logical}"):
            continue
        where = f"Resources.{logical}"
        props = resolver.resolve(res.get("Properties") or {}, f"{where}.Properties")
        merged = {**globals_fn, **props}
        if "Environment" in globals_fn and "Environment" in props:   # SAM merges maps
            merged["Environment"] = {"Variables": {
                **(globals_fn["Environment"].get("Variables") or {}),
                **(props["Environment"].get("Variables") or {})}}
        for key in sorted(set(props) - FUNCTION_PROPS):
            warnings.append(f"{where}.Properties.{key}: ignored")
        out.append(_function(logical, functions[logical], merged, where, path.parent,
                             resolver, warnings))
    if not out:
        raise ConfigError(f"{path}: no AWS::Serverless::Function to deploy")
    return Plan(stack=stack, functions=out, warnings=warnings)


def _function(logical: str, name: str, p: dict, where: str, base: Path, resolver: _Resolver,
              warnings: list[str]) -> FunctionPlan:
    for key in ("CodeUri", "Handler", "Runtime"):
        if key not in p:
            raise ConfigError(f"{where}.Properties.{key}: required")
    runtime = RUNTIMES.get(str(p["Runtime"]))
    if runtime is None:
        raise ConfigError(f"{where}.Properties.Runtime: {p['Runtime']!r} is not supported "
                          f"(one of {', '.join(sorted(RUNTIMES))})")
    if not isinstance(p["CodeUri"], str):
        raise ConfigError(f"{where}.Properties.CodeUri: a local directory or .zip path "
                          "(S3 locations are not supported)")
    code = (base / p["CodeUri"]).resolve()
    if not code.exists():
        raise ConfigError(f"{where}.Properties.CodeUri: {code} does not exist")
    env = (p.get("Environment") or {}).get("Variables") or {}
    if not isinstance(env, Mapping):
        raise ConfigError(f"{where}.Properties.Environment.Variables: must be a map")
    try:
        config = FunctionConfig(
            name=name, handler=str(p["Handler"]), runtime=runtime,
            memory_mb=_int(p.get("MemorySize", 128), f"{where}.Properties.MemorySize",
                           128, 10240),
            timeout_s=float(_int(p.get("Timeout", 3), f"{where}.Properties.Timeout", 1, 900)),
            environment={str(k): str(v) for k, v in env.items()},
            ephemeral_storage_mb=_int((p.get("EphemeralStorage") or {}).get("Size", 512),
                                      f"{where}.Properties.EphemeralStorage.Size", 512, 10240))
    except ConfigError as exc:
        if exc.message.startswith(where):
            raise
        raise ConfigError(f"{where}.Properties: {exc.message}") from None
    if runtime != "provided" and not code.is_dir() and code.suffix != ".zip":
        raise ConfigError(f"{where}.Properties.CodeUri: {code} is neither a directory nor a .zip")
    if code.is_dir() and runtime == "python":
        module = str(p["Handler"]).rsplit(".", 1)[0].replace(".", "/")
        if not ((code / f"{module}.py").exists() or (code / module / "__init__.py").exists()):
            raise ConfigError(f"{where}.Properties.Handler: {p['Handler']!r}: no {module}.py "
                              f"in {code}")
    fp = FunctionPlan(logical_id=logical, config=config, code=code)
    apply_on = (p.get("SnapStart") or {}).get("ApplyOn", "PublishedVersions")
    if apply_on not in ("PublishedVersions", "None"):
        raise ConfigError(f"{where}.Properties.SnapStart.ApplyOn: PublishedVersions or None")
    fp.snap_start = apply_on == "PublishedVersions"
    if "AutoPublishAlias" in p:
        fp.alias = str(p["AutoPublishAlias"])
    if "ReservedConcurrentExecutions" in p:
        fp.reserved = _int(p["ReservedConcurrentExecutions"],
                           f"{where}.Properties.ReservedConcurrentExecutions", 0, 100000)
    if "ProvisionedConcurrencyConfig" in p:
        if not fp.alias:
            raise ConfigError(f"{where}.Properties.ProvisionedConcurrencyConfig: needs "
                              "AutoPublishAlias (as in SAM)")
        fp.provisioned = _int((p["ProvisionedConcurrencyConfig"] or {}).get(
            "ProvisionedConcurrentExecutions"),
            f"{where}.Properties.ProvisionedConcurrencyConfig.ProvisionedConcurrentExecutions",
            0, 1000)
    url = p.get("FunctionUrlConfig")
    if url is not None:
        auth = (url or {}).get("AuthType", "NONE")
        mode = (url or {}).get("InvokeMode", "BUFFERED")
        if auth not in ("NONE", "AWS_IAM") or mode not in ("BUFFERED", "RESPONSE_STREAM"):
            raise ConfigError(f"{where}.Properties.FunctionUrlConfig: AuthType NONE|AWS_IAM, "
                              "InvokeMode BUFFERED|RESPONSE_STREAM")
        fp.function_url = {"function": name, "qualifier": fp.alias, "auth_type": auth,
                           "invoke_mode": mode, "cors": (url or {}).get("Cors")}
    eic = p.get("EventInvokeConfig")
    if eic is not None:
        fp.destinations = _destinations(eic, name, fp.alias, f"{where}.Properties."
                                        "EventInvokeConfig", resolver)
    for ev_name, ev in (p.get("Events") or {}).items():
        _event(fp, ev_name, ev, f"{where}.Properties.Events.{ev_name}", warnings)
    return fp


def _destinations(eic: dict, name: str, alias: str | None, where: str,
                  resolver: _Resolver) -> dict[str, Any]:
    def dest(d: Any, which: str) -> dict | None:
        if not d:
            return None
        kind, target = d.get("Type"), d.get("Destination")
        if kind == "Lambda":
            target_name = str(target).rsplit(":function:", 1)[-1].split(":")[0]
            return {"type": "function", "name": target_name}
        if kind == "SQS":
            return {"type": "sqs", "queue_url": str(target)}
        raise ConfigError(f"{where}.DestinationConfig.{which}: Type Lambda or SQS")

    dc = eic.get("DestinationConfig") or {}
    return {"function": name, "qualifier": alias,
            "maximum_retry_attempts": _int(eic.get("MaximumRetryAttempts", 2),
                                           f"{where}.MaximumRetryAttempts", 0, 2),
            "maximum_event_age_s": _int(eic.get("MaximumEventAgeInSeconds", 21600),
                                        f"{where}.MaximumEventAgeInSeconds", 60, 21600),
            "on_success": dest(dc.get("OnSuccess"), "OnSuccess"),
            "on_failure": dest(dc.get("OnFailure"), "OnFailure")}


def _event(fp: FunctionPlan, ev_name: str, ev: Any, where: str, warnings: list[str]) -> None:
    if not isinstance(ev, Mapping) or "Type" not in ev:
        raise ConfigError(f"{where}: needs a Type")
    kind, props = ev["Type"], ev.get("Properties") or {}
    name, qualifier = fp.config.name, fp.alias
    if kind not in EVENT_TYPES:
        warnings.append(f"{where}: event type {kind} ignored")
        return
    if kind in ("HttpApi", "Api"):
        method = str(props.get("Method", "ANY" if kind == "HttpApi" else "")).upper()
        path = props.get("Path", "$default" if kind == "HttpApi" else None)
        if not path or not method:
            raise ConfigError(f"{where}.Properties: {kind} needs Path and Method")
        if method == "ANY" or method == "X-AMAZON-APIGATEWAY-ANY-METHOD":
            method = "ANY"
        fmt = str(props.get("PayloadFormatVersion", "2.0")) if kind == "HttpApi" else "1.0"
        route = {"function": name, "qualifier": qualifier, "source": kind, "method": method,
                 "path": str(path), "payload_format": fmt}
        if "TimeoutInMillis" in props:
            route["timeout_ms"] = _int(props["TimeoutInMillis"],
                                       f"{where}.Properties.TimeoutInMillis", 50, 30000)
        from ..triggers.http import check_route
        try:
            check_route(method, str(path))
        except ConfigError as exc:
            raise ConfigError(f"{where}.Properties: {exc.message}") from None
        fp.http_routes.append(route)
    elif kind in ("Schedule", "ScheduleV2"):
        expr = props.get("Schedule") if kind == "Schedule" else props.get("ScheduleExpression")
        if not isinstance(expr, str):
            raise ConfigError(f"{where}.Properties: {kind} needs "
                              f"{'Schedule' if kind == 'Schedule' else 'ScheduleExpression'}")
        zone = props.get("ScheduleExpressionTimezone") if kind == "ScheduleV2" else None
        from ..triggers.schedule import parse
        try:
            parse(expr, zone)
        except ConfigError as exc:
            raise ConfigError(f"{where}.Properties: {exc.message}") from None
        enabled = props.get("Enabled", props.get("State", "ENABLED") != "DISABLED")
        inp = props.get("Input")
        entry = {"id": f"{name}-{ev_name}", "function": name, "qualifier": qualifier,
                 "expression": expr, "enabled": bool(enabled),
                 "input": inp if inp is None or isinstance(inp, str) else json.dumps(inp)}
        if zone:
            entry["timezone"] = str(zone)
        fp.schedules.append(entry)
    else:   # MQ, SQS
        batch = props.get("BatchSize", 100 if kind == "MQ" else 10)
        window = props.get("MaximumBatchingWindowInSeconds", 0)
        mapping: dict[str, Any] = {
            "id": f"{name}-{ev_name}", "function": name, "qualifier": qualifier, "type": kind,
            "batch_size": _int(batch, f"{where}.Properties.BatchSize", 1, 10000),
            "batching_window_s": float(_int(window, f"{where}.Properties."
                                            "MaximumBatchingWindowInSeconds", 0, 300)),
            "enabled": bool(props.get("Enabled", True)), "options": {}}
        if kind == "MQ":
            broker, queues = props.get("Broker"), props.get("Queues")
            if not broker or not isinstance(queues, list) or not queues:
                raise ConfigError(f"{where}.Properties: MQ needs Broker and Queues")
            mapping["source"] = str(broker)
            mapping["queues"] = [str(q) for q in queues]
            for key in sorted(set(props) - {"Broker", "Queues", "BatchSize", "Enabled",
                                            "MaximumBatchingWindowInSeconds"}):
                warnings.append(f"{where}.Properties.{key}: ignored (the broker URL carries "
                                "credentials and vhost)")
        else:
            if not props.get("Queue"):
                raise ConfigError(f"{where}.Properties: SQS needs Queue")
            mapping["source"] = str(props["Queue"])
            mapping["options"] = {"function_response_types":
                                  list(props.get("FunctionResponseTypes") or [])}
            for key in sorted(set(props) - {"Queue", "BatchSize", "Enabled", "FunctionResponseTypes",
                                            "MaximumBatchingWindowInSeconds"}):
                warnings.append(f"{where}.Properties.{key}: ignored")
        from ..triggers.queues import MappingSpec
        try:
            MappingSpec.from_entry(mapping)     # what serve will accept, checked now
        except ConfigError as exc:
            raise ConfigError(f"{where}.Properties: {exc.message}") from None
        fp.mappings.append(mapping)
