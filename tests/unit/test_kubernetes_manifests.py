"""deploy/kubernetes/: every manifest validated offline against Kubernetes' own API
schemas, then the facts that matter checked against the code they describe.

Schemas: the ``kubernetes-validate`` package (the ``test`` extra) bundles the
OpenAPI-derived JSON schemas of each Kubernetes release; its *strict* variant
rejects unknown fields. Each document is validated against the pinned versions in
``K8S_VERSIONS``: the oldest release these manifests use fields of (1.30:
``securityContext.appArmorProfile``) and the newest the pinned package bundles.
A missing schema or version fails the test; nothing skips.

What schemas cannot see (the API server's semantic validation, selectors, names,
references between objects) is checked below by hand, and every claim the
manifests make about snapstart (the serve options, the probe route, the variables,
the drain time, the L1 budget) is checked against snapstart's code. No cluster, no
network, no root: what this does not cover is in README.md ("Kubernetes").
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from aiohttp import web

from snapstart import cli
from snapstart.config import CRIU_RUNDIR, PROJECT_ROOT, Settings
from snapstart.errors import ConfigError
from snapstart.invoke_api import server
from snapstart.store import LocalStore
from snapstart.store.crypto import encryption_key_from_env

MANIFESTS = PROJECT_ROOT / "deploy" / "kubernetes"
K8S_VERSIONS = ("1.30.0", "1.37.0")
NAMESPACE = "snapstart"
PORT_NAME = "invoke-api"
# Capabilities snapstart was seen to need (deploy/kubernetes/capability-probe.py):
# with any one of them dropped from the bounding set, publish, a restored start, a
# cold start or an egress start failed; with only these, all four worked. The
# DaemonSet must name and explain each where it explains privileged.
MEASURED_CAPABILITIES = ("SYS_ADMIN", "SYS_PTRACE", "NET_ADMIN", "SETUID", "SETGID",
                         "SETPCAP", "SYS_TIME", "SYS_CHROOT", "KILL", "CHOWN")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_IANA_SVC_NAME = re.compile(r"^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*$")
_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi|Ti|m)?$")


def _load() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    docs.append((path.name, doc))
    return docs


DOCS = _load()


def _one(kind: str, name: str | None = None) -> dict:
    found = [d for _, d in DOCS if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def daemonset() -> dict:
    return _one("DaemonSet", "snapstart")


@pytest.fixture(scope="module")
def pod(daemonset) -> dict:
    return daemonset["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def serve(pod) -> dict:
    (container,) = pod["containers"]
    return container


@pytest.fixture(scope="module")
def configmap() -> dict:
    return _one("ConfigMap", "snapstart-config")


@pytest.fixture(scope="module")
def secret() -> dict:
    return _one("Secret", "snapstart-keys")


def _quantity(text: str | int) -> float:
    m = _QUANTITY.match(str(text))
    assert m, f"unparsed quantity {text!r}"
    scale = {None: 1, "m": 1e-3, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
    return int(m.group(1)) * scale[m.group(2)]


def _mount_of(container: dict, name: str) -> dict:
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == name]
    return mount


def _volume(pod: dict, name: str) -> dict:
    (volume,) = [v for v in pod["volumes"] if v["name"] == name]
    return volume


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


# ---- schemas --------------------------------------------------------------------------

def test_the_manifests_are_the_expected_objects():
    kinds = sorted((d["kind"], d["metadata"]["name"]) for _, d in DOCS)
    assert kinds == [("ConfigMap", "snapstart-config"), ("DaemonSet", "snapstart"),
                     ("Namespace", "snapstart"), ("NetworkPolicy", "snapstart-invoke-api"),
                     ("Secret", "snapstart-keys"), ("Service", "snapstart"),
                     ("Service", "snapstart-workers")]
    # `kubectl apply -f deploy/kubernetes/` goes in file-name order: namespace first
    assert DOCS[0][1]["kind"] == "Namespace"
    for _, doc in DOCS:
        name = doc["metadata"]["name"]
        assert _DNS1123_LABEL.match(name), name
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, name
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "snapstart", name


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("doc", [d for _, d in DOCS],
                         ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in DOCS])
def test_each_document_validates_strictly_against_the_pinned_schema(doc, version):
    try:
        validated = kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} against {version}: "
                    f"{where}: {exc.message}")
    # validated against this very release's schema, not an older fallback
    assert validated == version.rsplit(".", 1)[0]


def test_strict_validation_rejects_an_unknown_field(daemonset):
    """The guard above is real: a misspelt field is an error, not ignored."""
    import copy

    bad = copy.deepcopy(daemonset)
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileges"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


# ---- what the API server would check and schemas do not -------------------------------

def test_selectors_and_ports_line_up(daemonset, serve):
    pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    selector = daemonset["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    (port,) = serve["ports"]
    assert port["name"] == PORT_NAME and _IANA_SVC_NAME.match(port["name"])
    services = [d for _, d in DOCS if d["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} == {"snapstart", "snapstart-workers"}
    for svc in services:
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        (sport,) = svc["spec"]["ports"]
        assert sport["targetPort"] == PORT_NAME and sport["port"] == port["containerPort"]
    assert _one("Service", "snapstart")["spec"]["type"] == "ClusterIP"
    assert _one("Service", "snapstart-workers")["spec"]["clusterIP"] == "None"
    policy = _one("NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["ingress"][0]["ports"] == [{"protocol": "TCP", "port": PORT_NAME}]


def test_every_volume_mount_has_its_volume(pod, serve):
    names = {v["name"] for v in pod["volumes"]}
    assert {m["name"] for m in serve["volumeMounts"]} == names


def test_env_refers_to_configmap_and_secret_keys_that_exist(serve, pod, configmap, secret):
    cm_keys, secret_keys = set(configmap["data"]), set(secret["stringData"])
    used_cm, used_secret = set(), set()
    for var in serve["env"]:
        ref = var.get("valueFrom", {})
        if "configMapKeyRef" in ref:
            r = ref["configMapKeyRef"]
            assert r["name"] == configmap["metadata"]["name"] and r["key"] in cm_keys, var
            used_cm.add(r["key"])
        elif "secretKeyRef" in ref:
            r = ref["secretKeyRef"]
            assert r["name"] == secret["metadata"]["name"] and r["key"] in secret_keys, var
            used_secret.add(r["key"])
        else:
            assert "value" in var, var
    keys = _volume(pod, "keys")["secret"]
    assert keys["secretName"] == secret["metadata"]["name"]
    used_secret |= {item["key"] for item in keys["items"]}
    # nothing configured that the pod does not use
    assert used_cm == cm_keys and used_secret == secret_keys


# ---- what the manifests say about snapstart, against the code -------------------------

def test_daemonset_runs_snapstart_serve_with_options_the_cli_accepts(serve):
    command = serve["command"]
    assert Path(command[0]).name == "snapstart" and command[1:] == ["serve"]
    assert command[0] == "/opt/snapstart/.venv/bin/snapstart"
    params = cli.serve.make_context("serve", list(serve["args"])).params   # click parses
    assert params["host"] == "0.0.0.0"          # reachable from the Service, not loopback
    (port,) = serve["ports"]
    assert params["port"] == port["containerPort"] == 9000
    assert params["restore_ahead"] >= 1


def test_probes_hit_the_metrics_route_of_the_invoke_api(serve):
    app = server.create_app(object())       # routes only; the service is used per request
    gets = {r.resource.canonical for r in app.router.routes() if r.method == "GET"}
    assert "/metrics" in gets
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert serve[probe]["httpGet"] == {"path": "/metrics", "port": PORT_NAME}, probe


def test_grace_period_covers_the_drain(pod, serve):
    """serve drains on SIGTERM with aiohttp's default shutdown timeout (it sets none)."""
    source = inspect.getsource(server._main)
    assert "shutdown_timeout" not in source and "AppRunner(" in source
    drain = inspect.signature(web.BaseRunner.__init__).parameters["shutdown_timeout"].default
    pre_stop = serve["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 10


def test_settings_parse_from_the_configmap_onto_the_mounted_volumes(configmap, pod, serve):
    env = dict(configmap["data"])
    settings = Settings.from_env(env)
    state = _mount_of(serve, "state")
    assert Path(state["mountPath"]) in settings.home.parents
    assert state.get("mountPropagation") == "None"
    host = _volume(pod, "state")["hostPath"]
    assert host == {"path": state["mountPath"], "type": "DirectoryOrCreate"}
    shm = _mount_of(serve, "shm")["mountPath"]
    assert shm == "/dev/shm"
    assert Path(shm) in settings.shm.parents and Path(shm) in Path(CRIU_RUNDIR).parents
    assert settings.uid_range == (800000, 899999)
    assert settings.region == env["SNAPSTART_REGION"]


def test_snapstart_variables_are_ones_the_code_reads(serve, configmap):
    names = set(_env(serve)) | set(configmap["data"])
    source = "\n".join(p.read_text() for p in (PROJECT_ROOT / "snapstart").rglob("*.py"))
    for name in sorted(n for n in names if n.startswith("SNAPSTART_")):
        assert f'"{name}"' in source, f"{name} is read nowhere in snapstart/"


def test_l1_tmpfs_and_memory_limit_hold_the_l1_budget(pod, serve):
    budget = inspect.signature(LocalStore.__init__).parameters["l1_budget_bytes"].default
    shm = _volume(pod, "shm")["emptyDir"]
    assert shm["medium"] == "Memory"
    size = _quantity(shm["sizeLimit"])
    assert size > budget
    limits, requests = serve["resources"]["limits"], serve["resources"]["requests"]
    assert _quantity(limits["memory"]) > size      # tmpfs pages are charged to the pod
    assert _quantity(requests["memory"]) <= _quantity(limits["memory"])
    assert "cpu" not in limits


def test_encryption_key_is_a_file_only_root_can_read(serve, pod):
    env = _env(serve)
    assert "SNAPSTART_ENCRYPTION_KEY" not in env     # crypto.py: one of the two, not both
    path = Path(env["SNAPSTART_ENCRYPTION_KEY_FILE"]["value"])
    mount = _mount_of(serve, "keys")
    assert mount["readOnly"] is True and path.parent == Path(mount["mountPath"])
    keys = _volume(pod, "keys")["secret"]
    assert [item["path"] for item in keys["items"]] == [path.name]
    assert keys["defaultMode"] & 0o077 == 0


def test_no_key_is_committed_and_the_placeholders_are_refused(secret, tmp_path):
    values = secret["stringData"]
    assert all(str(v).startswith("REPLACE-ME") for v in values.values())
    with pytest.raises(ConfigError):
        encryption_key_from_env({"SNAPSTART_ENCRYPTION_KEY": values["encryption-key"]})
    settings = Settings(home=tmp_path / "home", criu="criu", shm=tmp_path / "shm")
    with pytest.raises(ConfigError):
        LocalStore.from_settings(settings, environ={
            "SNAPSTART_STORE_KEY": values["SNAPSTART_STORE_KEY"]})


# ---- privileges ---------------------------------------------------------------------

def test_pod_gets_no_host_namespace_and_no_api_token(pod):
    assert pod["hostPID"] is False and pod["hostIPC"] is False
    assert pod["hostNetwork"] is False and pod["hostUsers"] is True
    # serve must not be PID 1: orphans.py looks for sandboxes reparented to PID 1,
    # and stale cgroups / work dirs are swept by their owner's PID
    assert pod["shareProcessNamespace"] is True
    assert pod["automountServiceAccountToken"] is False
    # a Service named "snapstart" would otherwise inject SNAPSTART_* variables
    assert pod["enableServiceLinks"] is False


def test_security_context_has_what_criu_and_the_namespaces_need(serve):
    ctx = serve["securityContext"]
    assert ctx["privileged"] is True and ctx["allowPrivilegeEscalation"] is True
    assert ctx["runAsUser"] == 0 and ctx["runAsGroup"] == 0 and ctx["runAsNonRoot"] is False
    assert ctx["seccompProfile"] == {"type": "Unconfined"}
    assert ctx["appArmorProfile"] == {"type": "Unconfined"}
    assert "capabilities" not in ctx        # privileged grants all; a list would mislead
    ns = _one("Namespace", NAMESPACE)["metadata"]["labels"]
    assert ns["pod-security.kubernetes.io/enforce"] == "privileged"


def _security_context_lines() -> list[str]:
    lines = (MANIFESTS / "20-daemonset.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "securityContext:")
    indent = len(lines[start]) - len(lines[start].lstrip()) + 2
    block = []
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        block.append(line)
    return block


def test_security_context_is_documented_line_by_line():
    block = _security_context_lines()
    indent = min(len(l) - len(l.lstrip()) for l in block if l.strip())
    previous = ""
    for line in block:
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and len(line) - len(line.lstrip()) == indent:
            assert previous.startswith("#"), f"no comment says why: {stripped}"
        if stripped:
            previous = stripped
    text = "\n".join(block)
    # each reason names the code path that needs it
    for path in ("cgroups.py", "netns.py", "mountns.py", "sandbox.py", "identities.py",
                 "confine.c"):
        assert path in text, path
    for cap in MEASURED_CAPABILITIES:
        assert re.search(rf"\b{cap}\b", text), f"capability {cap} not explained"
