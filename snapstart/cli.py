"""The ``snapstart`` command line: a thin layer over ``snapstart.Manager``.

Errors become one clear line on stderr and a non-zero exit (a traceback only with
``--debug``). A *function* error is not a CLI error: the invocation worked, the
payload is Lambda's error shape, and the exit code is 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .errors import SnapStartError

if TYPE_CHECKING:
    from .results import InvokeResult

CONTEXT = {"help_option_names": ["-h", "--help"]}


class _Group(click.Group):
    """The CLI's error boundary: every command ends in one line on stderr and an exit
    code (1: the request failed, e.g. unknown function, bad input, I/O error; 2: a
    bug in snapstart); a traceback only with ``--debug``."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("snapstart: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # noqa: BLE001 - the boundary
            if ctx.obj and ctx.obj.get("debug"):     # set by main() once it ran
                raise
            click.echo(f"snapstart: error: {_one_line(exc)}", err=True)
            ctx.exit(1 if _expected(exc) else 2)


def _expected(exc: BaseException) -> bool:
    """Errors of the request or the machine, not bugs in snapstart."""
    import sqlite3

    from .invoke_api.errors import ApiError
    return isinstance(exc, (SnapStartError, ApiError, OSError, sqlite3.Error))


def _one_line(exc: BaseException) -> str:
    from .invoke_api.errors import ApiError
    if isinstance(exc, (SnapStartError, ApiError)):
        text = f"{exc.error_type}: {exc.message}"
    elif isinstance(exc, OSError) and exc.filename:
        text = f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    elif _expected(exc):
        text = f"{type(exc).__name__}: {exc}"
    else:
        text = (f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
                "traceback)")
    return " ".join(text.split())


@click.group(cls=_Group, context_settings=CONTEXT)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """snapstart: publish functions into CRIU snapshots; serve invokes from restored clones."""
    ctx.ensure_object(dict)["debug"] = debug
    import logging
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="snapstart: %(levelname)s: %(message)s")


def _settings():
    from .config import Settings
    return Settings.from_env()


def _early_slot(settings):
    """A restore slot being prepared on a thread (a Future), for a one-shot invoke
    (Manager's slot pool adopts it), with what the manager would have set up on the
    host first (sandbox.prepare_host). The modules it needs are imported here,
    before the thread starts: imports hold the GIL, and the rest of snapstart's are
    made while the slot's processes start."""
    import threading
    from concurrent.futures import Future

    from .checkpoint.criu import Criu
    from .sandbox.procs import owner_tag, private_name
    from .sandbox.sandbox import RestoreSlot, prepare_host

    pending: Future = Future()
    # The main thread imports (GIL-bound) while this one forks and mounts, needing
    # the GIL back after each system call: at the default 5 ms switch interval it
    # waits ~4x longer than its work takes.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)

    def prepare() -> None:
        try:
            run = prepare_host(settings.shm)
            pending.set_result(RestoreSlot.prepare(Criu(settings.criu), run / private_name(),
                                                   owner=owner_tag(settings.home)))
        except BaseException as exc:  # noqa: BLE001 - the restore prepares its own
            pending.set_exception(exc)
        finally:
            sys.setswitchinterval(switch)

    threading.Thread(target=prepare, name="snapstart-slot", daemon=True).start()
    return pending


def _parse_env(pairs: tuple[str, ...]) -> dict[str, str]:
    from .errors import ConfigError
    env = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--env expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        env[key] = value
    return env


@main.command()
@click.argument("directory", type=click.Path(exists=True, path_type=Path),
                metavar="DIRECTORY|ZIP")
@click.option("--name", required=True, help="Function name.")
@click.option("--handler", required=True, help="module.function, e.g. app.handler")
@click.option("--runtime", default="python", show_default=True)
@click.option("--memory", "memory_mb", type=int, default=512, show_default=True, help="MB")
@click.option("--timeout", "timeout_s", type=float, default=3.0, show_default=True, help="seconds")
@click.option("--env", "env", multiple=True, metavar="K=V", help="Environment variable.")
@click.option("--ephemeral-storage", "ephemeral_mb", type=int, default=512, show_default=True,
              help="Size of the private /tmp, MB (512-10240).")
@click.option("--egress", is_flag=True,
              help="Give clones a veth to the host (link-local 169.254.x.x addresses).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--check", "run_check", is_flag=True,
              help="Then run `snapstart check` on the new version (exit 1 on hazards).")
def publish(directory: Path, name: str, handler: str, runtime: str, memory_mb: int,
            timeout_s: float, env: tuple[str, ...], ephemeral_mb: int, egress: bool,
            as_json: bool, run_check: bool) -> None:
    """Init the function in DIRECTORY (or a .zip package) once, snapshot it, record a
    new immutable version."""
    import shutil
    import tempfile

    from .config import FunctionConfig
    from .deploy.package import is_zip, unpack_zip
    from .manager import Manager

    config = FunctionConfig(name=name, handler=handler, runtime=runtime, memory_mb=memory_mb,
                            timeout_s=timeout_s, environment=_parse_env(env),
                            ephemeral_storage_mb=ephemeral_mb, egress=egress)
    staging = None
    if not directory.is_dir():
        if not is_zip(directory):
            raise click.UsageError(f"{directory} is neither a directory nor a zip file")
        staging = Path(tempfile.mkdtemp(prefix="snapstart-zip-", dir="/tmp"))
    try:
        code = unpack_zip(directory, staging / "code") if staging else directory
        with Manager(_settings(), keep_warm=False) as manager:
            result = manager.publish(code, config, progress=sys.stderr.isatty())
            info = manager.registry.version(name, result.version) if run_check else None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    if not as_json:
        click.echo(f"published {result.name}:{result.version}  init {result.init_duration_ms:.0f} ms"
                   f"  dump {result.dump_duration_ms:.0f} ms  image {result.image_bytes / 2**20:.1f} MiB"
                   f"  stored {result.stored_bytes / 2**20:.1f} MiB")
    if info is None:
        if as_json:
            click.echo(json.dumps(result.to_dict()))
        return
    _run_check(info, as_json, extra={"publish": result.to_dict()} if as_json else None)


@main.command()
@click.argument("template", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--parameter-overrides", "overrides", multiple=True, metavar="K=V",
              help="Template parameter values (repeatable; also K=V K2=V2 in one).")
@click.option("--stack-name", default=None, help="AWS::StackName (default: the template's "
              "directory name).")
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@click.option("--json", "as_json", is_flag=True)
def deploy(template: Path, overrides: tuple[str, ...], stack_name: str | None, dry_run: bool,
           as_json: bool) -> None:
    """Deploy an AWS SAM template: publish its functions, configure their triggers."""
    from .deploy.apply import deploy as run_deploy
    from .deploy.template import plan
    from .manager import Manager

    pairs = {}
    for item in (p for arg in overrides for p in arg.split()):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--parameter-overrides expects K=V, got {item!r}")
        pairs[key] = value
    settings = _settings()
    the_plan = plan(template, pairs, stack=stack_name, region=settings.region,
                    account=settings.account_id)
    for warning in the_plan.warnings:
        click.echo(f"snapstart: warning: {warning}", err=True)
    with Manager(settings, keep_warm=False, restore_slots=0) as manager:
        result = run_deploy(the_plan, manager, template=template, dry_run=dry_run,
                            progress=sys.stderr.isatty() and not as_json)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    for change in result.changes:
        click.echo(("would " if dry_run and not change.startswith("unchanged") else "") + change)
    click.echo(f"{'dry run: ' if dry_run else ''}{len(result.published)} published, "
               f"{len(result.unchanged)} unchanged")


def _result_dict(result) -> dict:
    try:
        payload = json.loads(result.payload) if result.payload else None
    except (ValueError, UnicodeDecodeError):
        payload = result.payload.decode("utf-8", "replace")
    out = {"payload": payload, "function_error": result.function_error,
           "start_type": result.start_type, "request_id": result.request_id,
           "duration_ms": round(result.duration_ms, 3),
           "max_memory_used_mb": result.max_memory_used_mb}
    if result.init_duration_ms is not None:
        out["init_duration_ms"] = round(result.init_duration_ms, 3)
    if result.restore_duration_ms is not None:
        out["restore_duration_ms"] = round(result.restore_duration_ms, 3)
    if result.notes:
        out["notes"] = list(result.notes)
    return out


def _report(result, version: str, memory_mb: int) -> None:
    from .manager.report import end_line, report_line, start_line
    for note in result.notes:
        click.echo(f"snapstart: {note}", err=True)
    click.echo(start_line(result.request_id, version), err=True)
    click.echo(end_line(result.request_id), err=True)
    click.echo(report_line(result.request_id, duration_ms=result.duration_ms, memory_mb=memory_mb,
                           max_memory_used_mb=result.max_memory_used_mb,
                           init_duration_ms=result.init_duration_ms,
                           restore_duration_ms=result.restore_duration_ms), err=True)


class _StdoutSink:
    """``invoke --stream``: a streamed response's bytes to stdout as they arrive."""

    def __init__(self) -> None:
        self.wrote = False

    def begin(self, content_type: str) -> None:
        pass

    def chunk(self, data: bytes) -> None:
        self.wrote = self.wrote or bool(data)
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except (OSError, ValueError):
            pass                            # stdout closed: the invocation goes on


@main.command()
@click.argument("ref", metavar="NAME[:VERSION|:ALIAS]")
@click.option("--payload", default=None, help="JSON event (default {}).")
@click.option("--payload-file", type=click.File("rb"), default=None)
@click.option("--log-type", type=click.Choice(["None", "Tail"]), default="None")
@click.option("--no-snapshot", is_flag=True, help="Full cold init instead of a restore.")
@click.option("--clones", type=click.IntRange(1, 256), default=None,
              help="Restore N clones at once and invoke each once.")
@click.option("--repeat", type=click.IntRange(1, 10000), default=1, show_default=True,
              help="Invoke N times in a row on one manager (the first restores, then warm).")
@click.option("--endpoint", envvar="SNAPSTART_ENDPOINT", default=None,
              help="Invoke through a `snapstart serve` endpoint.")
@click.option("--stream", is_flag=True,
              help="Print a streamed response's chunks as they arrive (InvokeWithResponseStream).")
@click.option("--json", "as_json", is_flag=True)
def invoke(ref: str, payload: str | None, payload_file, log_type: str, no_snapshot: bool,
           clones: int | None, repeat: int, endpoint: str | None, stream: bool,
           as_json: bool) -> None:
    """Invoke a function: restored from its snapshot by default."""
    from .registry import parse_ref

    if stream and (clones or repeat > 1 or as_json):
        raise click.UsageError("--stream prints one invocation's bytes: no --clones, "
                               "--repeat or --json")
    body = payload_file.read() if payload_file else (payload or "{}").encode()
    name, qualifier = parse_ref(ref)
    invoke_ms: dict[str, float] = {}      # request sent -> response, in this process
    results: list[InvokeResult | SnapStartError]
    sink = _StdoutSink() if stream else None
    if endpoint and sink is not None:
        from .invoke_api.client import invoke_remote_stream
        remote = invoke_remote_stream(endpoint, name, qualifier, body, sink,
                                      tail=log_type == "Tail")
        results = [remote]
        version, memory = remote.executed_version, 0
    elif endpoint:
        from .invoke_api.client import invoke_remote
        remote = invoke_remote(endpoint, name, qualifier, body, tail=log_type == "Tail")
        results = [remote]
        version, memory = remote.executed_version, 0
    else:
        import time

        settings = _settings()
        # One restore slot, started first: its namespaces, cgroup and criu worker
        # (~7 ms of forks and mounts) are made while the rest of snapstart is
        # imported and the function resolved, not after.
        early = None if (no_snapshot or clones) else _early_slot(settings)
        from .manager import Manager
        with Manager(settings, keep_warm=repeat > 1, restore_slots=0,
                     refill_slots=False) as manager:
            if early is not None:
                manager.slots.adopt(early)
            info = manager.registry.resolve(name, qualifier)
            if early is not None and info.snapshot:
                manager.preload()         # while the slot's processes start
            version, memory = info.version, info.config.memory_mb
            if clones:
                results = manager.invoke_clones(name, clones, body, qualifier=qualifier)
            else:
                results = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    result = manager.invoke_version(info, body, no_snapshot=no_snapshot,
                                                    qualifier=qualifier, sink=sink)
                    invoke_ms[result.request_id] = (time.perf_counter() - t0) * 1000
                    results.append(result)
    rows = []
    failures = 0
    for item in results:
        if isinstance(item, SnapStartError):
            failures += 1
            click.echo(f"snapstart: error: {item.error_type}: {item.message}", err=True)
            rows.append({"error": item.to_lambda()})
            continue
        if memory:
            _report(item, version, memory)
        row = _result_dict(item)
        if item.request_id in invoke_ms:
            row["invoke_ms"] = round(invoke_ms[item.request_id], 3)
        if log_type == "Tail":
            row["logs"] = item.logs[-4096:].decode("utf-8", "replace")
            if not as_json:
                click.echo(row["logs"], err=True, nl=False)
        rows.append(row)
    from . import tracing
    tracing.shutdown()                  # export the invocation's spans, if traced
    if as_json:
        click.echo(json.dumps(rows if (clones or repeat > 1) else rows[0]))
    else:
        for item in results:
            if isinstance(item, SnapStartError):
                continue
            if sink is not None and sink.wrote:
                click.echo()                # end the streamed bytes' last line
            if sink is None or item.function_error or not (sink.wrote or
                                                           item.stream_content_type):
                click.echo(item.payload.decode("utf-8", "replace"))
    if failures:
        sys.exit(1)


@main.group()
def alias() -> None:
    """Manage aliases (NAME:ALIAS works wherever NAME:VERSION does)."""


@alias.command("set")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@click.argument("version", type=int)
def alias_set(name: str, alias_name: str, version: int) -> None:
    from .registry import Registry
    Registry(_settings()).set_alias(name, alias_name, version)
    click.echo(f"{name}:{alias_name} -> {version}")


@alias.command("ls")
@click.argument("name")
def alias_ls(name: str) -> None:
    from .registry import Registry
    for key, value in sorted(Registry(_settings()).aliases(name).items()):
        click.echo(f"{key}\t{value}")


@main.command("functions")
@click.option("--json", "as_json", is_flag=True)
def functions_cmd(as_json: bool) -> None:
    """List functions and their published versions."""
    from .registry import Registry
    reg = Registry(_settings())
    rows = [{"name": n, "versions": reg.versions(n), "aliases": reg.aliases(n)}
            for n in reg.functions()]
    if as_json:
        click.echo(json.dumps(rows))
    else:
        for row in rows:
            click.echo(f"{row['name']}\tversions={row['versions']}\taliases={row['aliases']}")


@main.command()
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("--json", "as_json", is_flag=True)
def check(ref: str, as_json: bool) -> None:
    """Find values init derives from randomness or the clock that every restored
    clone would share; exit 1 when there are any (manager/check.py)."""
    from .errors import ConfigError
    from .registry import LATEST, Registry, parse_ref

    name, qualifier = parse_ref(ref)
    info = Registry(_settings()).resolve(name, qualifier)
    if info.version == LATEST:
        raise ConfigError(f"{name} has no published version to check")
    _run_check(info, as_json)


def _run_check(info, as_json: bool, extra: dict | None = None) -> None:
    """`snapstart check`'s run and output (also `publish --check`)."""
    import time

    from .manager.check import check_uniqueness

    name = info.name
    t0 = time.monotonic()
    result = check_uniqueness(_settings(), info)
    took = time.monotonic() - t0
    findings = result.findings
    if as_json:
        click.echo(json.dumps({**(extra or {}), "function": name, "version": info.version,
                               "seconds": round(took, 2), **result.to_dict()}))
    else:
        for f in findings:
            click.echo(f"HAZARD {f.path} = {f.sample}: {f.why}")
        diff = ", ".join(f"{kind} {n // 1024} KiB" for kind, n in
                         sorted(result.differing_bytes.items(), key=lambda kv: -kv[1]))
        click.echo(f"memory that differs between two inits: {diff or 'none'}")
        if not result.names_compared:
            click.echo(f"({info.config.runtime}: names are compared for Python and Node "
                       "functions only; the memory above is what differs)")
        click.echo(f"{name}:{info.version}: {len(findings)} hazard(s) "
                   f"(two inits and two restored clones compared, {took:.1f} s)")
    if findings:
        sys.exit(1)


@main.group()
def snapshots() -> None:
    """Inspect and maintain the snapshot store."""


def _store():
    from .store import LocalStore
    return LocalStore.from_settings(_settings())


@snapshots.command("ls")
@click.option("--json", "as_json", is_flag=True)
def snapshots_ls(as_json: bool) -> None:
    """Per version: logical size, stored size, compression ratio, bytes shared."""
    rows = _store().stats()
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(f"{'FUNCTION:VERSION':28} {'LOGICAL':>10} {'STORED':>10} {'RATIO':>6} "
               f"{'SHARED':>10} ENCRYPTED")
    for row in rows:
        ref = f"{row['name']}:{row['version']}"
        click.echo(f"{ref:28} {row['logical_bytes'] / 2**20:9.1f}M {row['stored_bytes'] / 2**20:9.1f}M "
                   f"{row['compression_ratio']:6.2f} {row['shared_bytes'] / 2**20:9.1f}M "
                   f"{'yes' if row.get('encrypted') else 'no'}")


@snapshots.command("inspect")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("--json", "as_json", is_flag=True)
def snapshots_inspect(ref: str, as_json: bool) -> None:
    """What a version's snapshot holds and why it is the size it is."""
    from .checkpoint import hotset
    from .checkpoint.inspect import inspect_images
    from .errors import ConfigError
    from .registry import LATEST, Registry, parse_ref
    from .sandbox.mountns import SANDBOX_ROOT, TMP_ARCHIVE

    name, qualifier = parse_ref(ref)
    registry = Registry(_settings())
    info = registry.resolve(name, qualifier)
    if info.version == LATEST:
        raise ConfigError(f"{name} has no published version: $LATEST has no snapshot")
    n = int(info.version)
    store = _store()
    manifest, images = store.materialized(name, n)
    report = inspect_images(images, tmp_archive=TMP_ARCHIVE, root=SANDBOX_ROOT).to_dict()
    hot = hotset.load(images / hotset.FILE_NAME)
    refs = manifest.chunk_refs()
    stored = {f.path: sum(c.stored_size for c in f.chunks) for f in manifest.files}
    previous = max((v for v in registry.versions(name) if v < n), default=None)
    shared_prev = None
    if previous is not None:
        try:
            before = store.manifest(name, previous).chunk_refs()
            shared_prev = sum(c.raw_size for h, c in refs.items() if h in before)
        except SnapStartError:
            shared_prev = None
    meta = manifest.meta
    env_names = sorted((meta.get("config") or {}).get("environment") or {})
    out = {
        "function": name, "version": n,
        "made_by": {"snapstart": meta.get("snapstart_version"),
                    "agent_protocol": meta.get("agent_protocol"),
                    "agent_layout": meta.get("agent_layout"),
                    "criu": meta.get("criu_version"), "python": meta.get("python"),
                    "arch": meta.get("arch"), "created": meta.get("created")},
        "init_duration_ms": meta.get("init_duration_ms"), "uid": meta.get("uid"),
        "environment_names": env_names,
        # registered hooks in the order they run; None: not recorded (publisher.py)
        "hooks": meta.get("hooks"),
        "logical_bytes": manifest.logical_bytes,
        "stored_bytes": sum(c.stored_size for c in refs.values()),
        "shared_with_previous_bytes": shared_prev, "previous_version": previous,
        "stored_by_file": stored,
        # pages the first restored invocation touched, faulted in ahead (hotset.py)
        "hot_set": None if hot is None else dict(zip(("written_pages", "read_pages"),
                                                     hot.pages)),
        **report}
    if as_json:
        click.echo(json.dumps(out, indent=1))
        return
    mib = 1 << 20
    made = out["made_by"]
    click.echo(f"{name}:{n}  made by snapstart {made['snapstart']} (agent protocol "
               f"{made['agent_protocol']}, {made['agent_layout']}), CRIU {made['criu']}, "
               f"Python {made['python']}, {made['arch']}, {made['created']}")
    click.echo(f"init {out['init_duration_ms'] or 0:.0f} ms  uid {out['uid']}  image "
               f"{out['logical_bytes'] / mib:.1f} MiB, stored {out['stored_bytes'] / mib:.1f}"
               " MiB" + (f", {shared_prev / mib:.1f} MiB shared with version {previous}"
                         if shared_prev is not None else ""))
    click.echo("environment variables: " + (", ".join(env_names) or "(none)"))
    if out["hooks"] is None:
        click.echo("hooks: (not recorded)")
    elif not out["hooks"]:
        click.echo("hooks: (none)")
    else:
        click.echo("hooks, in the order they run:")
        for hook in out["hooks"]:
            click.echo(f"  {hook['kind'].replace('_', '-'):16} {hook['name']}"
                       + (f"  ({hook['at']})" if hook.get("at") else ""))
    click.echo("hot set: " + ("(not recorded yet: after this node's first restored "
                              "invocation)" if hot is None else
                              f"{hot.pages[0]} pages written, {hot.pages[1]} read by the first "
                              "restored invocation; faulted in ahead of later ones"))
    click.echo("processes:")
    for proc in out["processes"]:
        click.echo(f"  pid {proc['pid']} ({proc['comm']}, {proc['threads']} threads): "
                   + " ".join(proc["argv"]))
    click.echo(f"memory by kind:      {'mapped':>10} {'in image':>10}")
    for kind, sizes in sorted(out["memory"].items(), key=lambda kv: -kv[1]["dumped"]):
        click.echo(f"  {kind:18} {sizes['mapped'] / mib:9.1f}M {sizes['dumped'] / mib:9.1f}M")
    click.echo("largest mappings in the image:")
    for row in out["largest"]:
        click.echo(f"  {row['dumped'] / mib:7.2f}M  {row['kind']:17} {row['start']:>14}  "
                   f"{row['path']}")
    if out["tmp_files"]:
        click.echo("/tmp left by init:")
        for f in out["tmp_files"]:
            click.echo(f"  {f['type']:4} {f['bytes']:>10}  {f['path']}")
    else:
        click.echo("/tmp left by init: (empty)")


@snapshots.command("verify")
@click.argument("ref", required=False, metavar="[NAME[:VERSION]]")
def snapshots_verify(ref: str | None) -> None:
    """Re-hash everything; report damage; exit 1 on any."""
    from .registry import parse_ref
    name, version = (parse_ref(ref) if ref else (None, None))
    if name is not None and version is not None and not (version.isascii()
                                                         and version.isdigit()):
        from .registry import Registry
        version = Registry(_settings()).resolve(name, version).version
    damage = _store().verify(name, int(version) if version else None)
    for line in damage:
        click.echo(f"DAMAGED {line}")
    if damage:
        sys.exit(1)
    click.echo("ok: every manifest signature and chunk hash verified")


@snapshots.command("rm")
@click.argument("ref", metavar="NAME:VERSION")
def snapshots_rm(ref: str) -> None:
    """Remove a published version (its chunks are reclaimed by gc)."""
    from .errors import ConfigError
    from .manager import Manager
    from .registry import parse_ref
    name, version = parse_ref(ref)
    if not version or not (version.isascii() and version.isdigit()):
        raise ConfigError("snapshots rm needs NAME:VERSION with a version number")
    with Manager(_settings(), keep_warm=False) as manager:
        manager.remove_version(name, int(version))
    click.echo(f"removed {name}:{version}")


@snapshots.command("gc")
def snapshots_gc() -> None:
    """Delete chunks no manifest references (safe during concurrent publishes)."""
    stats = _store().gc()
    click.echo(" ".join(f"{k}={v}" for k, v in stats.items()))


@main.command()
def doctor() -> None:
    """Check this machine's requirements (exit 1 if a hard one fails)."""
    from .doctor import run_checks
    ok = True
    for check in run_checks(_settings()):
        mark = "ok  " if check.ok else ("FAIL" if check.hard else "warn")
        line = f"{mark} {check.name}: {check.detail}"
        if not check.ok and check.fix:
            line += f"  (fix: {check.fix})"
        click.echo(line)
        ok = ok and (check.ok or not check.hard)
    if not ok:
        sys.exit(1)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=9000, show_default=True)
@click.option("--max-concurrency", type=click.IntRange(1, 10000), default=None,
              help="Account concurrency limit (default: sized to RAM).")
@click.option("--idle-timeout", type=float, default=300.0, show_default=True,
              help="Seconds an idle clone is kept before it is shut down.")
@click.option("--max-lifetime", type=float, default=7200.0, show_default=True,
              help="Seconds after which a clone is recycled.")
@click.option("--event-retries", type=click.IntRange(0, 2), default=2, show_default=True,
              help="Retries of a failed Event invocation.")
@click.option("--event-backoff", type=float, default=60.0, show_default=True,
              help="Seconds before the first retry (doubles each time).")
@click.option("--restore-ahead", type=click.IntRange(0, 8), default=1, show_default=True,
              help="Clones of each recently invoked version kept restored ahead of demand "
                   "(start type restored-pool); 0: restore on demand only.")
def serve(host: str, port: int, max_concurrency: int | None, idle_timeout: float,
          max_lifetime: float, event_retries: int, event_backoff: float,
          restore_ahead: int) -> None:
    """Serve Lambda's Invoke API (boto3 / aws-cli with --endpoint-url)."""
    from .invoke_api.server import ServeOptions, serve as run_server
    run_server(ServeOptions(host=host, port=port, max_concurrency=max_concurrency,
                            idle_timeout_s=idle_timeout, max_lifetime_s=max_lifetime,
                            event_retries=event_retries, event_backoff_s=event_backoff,
                            restore_ahead=restore_ahead),
               _settings())


@main.command()
@click.argument("name")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--since", type=float, default=None, help="Only lines of the last SECONDS.")
def logs(name: str, follow: bool, since: float | None) -> None:
    """Print a function's logs (START/END/REPORT and its output)."""
    from .logs import follow as follow_lines, read_lines
    home = _settings().home
    for line in read_lines(home, name, since_s=since):
        click.echo(line)
    if follow:
        for line in follow_lines(home, name):
            click.echo(line)


@main.group()
def events() -> None:
    """Queued and failed asynchronous (Event) invocations."""


@events.command("ls")
@click.option("--failed", is_flag=True, help="The failed-events (dead letter) table.")
@click.option("--schedules", is_flag=True,
              help="The schedules (triggers.json): last tick fired, next tick.")
@click.option("--json", "as_json", is_flag=True)
def events_ls(failed: bool, schedules: bool, as_json: bool) -> None:
    """Queued Event invocations (default), failed ones, or the schedules."""
    if schedules:
        _schedules_ls(as_json)
        return
    from .events import EventStore
    store = EventStore(_settings().home / "events.db")
    rows = [r.to_dict() for r in (store.failed() if failed else store.pending())]
    store.close()
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        qual = f":{row['qualifier']}" if row["qualifier"] else ""
        extra = row["error"] or ""
        click.echo(f"{row['id']}\t{row['function']}{qual}\tattempts={row['attempts']}\t{extra}")


def _schedules_ls(as_json: bool) -> None:
    from .triggers.schedule import describe
    rows = describe(_settings().home)
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        qual = f":{row['qualifier']}" if row["qualifier"] else ""
        state = "enabled" if row["enabled"] else "disabled"
        line = (f"{row['id']}\t{row['function']}{qual}\t{row['expression']}\t{state}\t"
                f"last={row['last_tick'] or '-'}\tnext={row['next_tick'] or '-'}")
        if row["error"]:
            line += f"\terror: {row['error']}"
        click.echo(line)


@main.group()
def mappings() -> None:
    """Event source mappings (RabbitMQ, SQS) of triggers.json, as serve runs them."""


@mappings.command("ls")
@click.option("--json", "as_json", is_flag=True)
def mappings_ls(as_json: bool) -> None:
    from .triggers.queues import describe_lines, describe
    rows = describe(_settings().home)
    if as_json:
        click.echo(json.dumps(rows))
        return
    for line in describe_lines(rows):
        click.echo(line)


if __name__ == "__main__":  # pragma: no cover
    main()
