"""PID 2 of a Python sandbox: the runtime and the agent in one process.

Started by snapinit (PID 1) through ``bootstrap/python/_snapstart_runtime.py`` as
``python -m _snapstart_runtime --ctl-fd N`` with snapstart's own environment only
(RuntimeSpec.exec_env), in the sandbox root (sandbox/mountns.py). It

1. becomes session leader and reads the host's ``start`` frame (argv, env, cwd,
   uid/gid, seccomp, pythonpath);
2. confines itself for good (``confine``: the function's uid/gid, no capabilities,
   no_new_privs, seccomp) *before* anything of the function acts: the function's
   environment (LD_PRELOAD, PYTHONHOME, ... would have acted at exec, as root) and
   its directories on sys.path (a ``sitecustomize.py`` there would have run at
   startup) are only taken from the frame after that; then fds 1 and 2 become a
   pipe (the function's output, which the agent forwards as ``log``);
3. starts the agent (``libsnapagent.so``, bootstrap/native, inproc layout) on its
   own thread, then runs ``python -m MODULE ARG...`` (``awslambdaric HANDLER``,
   unmodified) on the main thread with ``runpy``; when that returns or raises
   ``SystemExit``, the agent reports the exit status to the host and the process
   ends.

Why one process: CRIU restores one process in about half the time of two (a
second, tiny process costs ~1.5 ms here, a second Python ~3.7 ms), and every
restored clone starts from this image. Why the agent is C: the native runtime
client holds the GIL while it POSTs a result and waits for the answer, so an agent
thread that needed the GIL would never answer.

What a function sees of it: one more thread (``snapstart-agent``), the modules
``_snapstart_bootstrap.*`` and msgpack in ``sys.modules``, fds for the host
channel and the Runtime API (close-on-exec, and closed in children it forks), and
an ``os._exit`` that tells the agent first (``_hand_over_exit``).
Variables the interpreter reads only at startup (PYTHONWARNINGS, PYTHONUTF8, ...)
are in the function's environment but do not act on this interpreter. Orphaned
grandchildren go to snapinit, which reaps them.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import socket
import sys
import traceback

from . import protocol

__all__ = ["main"]


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


LIBRARY = "/var/runtime/snapstart/libsnapagent.so"     # sandbox/mountns.py


def _hand_over_exit(lib: ctypes.CDLL) -> None:
    """``os._exit`` in this process goes through the agent: the output the function
    wrote just before (still in the pipe the agent thread reads) and the exit
    status reach the host before the process ends; a plain ``os._exit`` would end
    the agent's thread with the pipe unread. Children this process forks keep the
    real one (the agent is not theirs)."""
    pid = os.getpid()
    real_exit = os._exit

    def _exit(status: int) -> None:
        if os.getpid() == pid:
            lib.snapagent_exit(int(status))
        real_exit(status)

    os._exit = _exit  # type: ignore[assignment]


def main(argv: list[str]) -> None:
    fd = int(argv[argv.index("--ctl-fd") + 1])
    os.set_inheritable(fd, False)
    try:
        os.setsid()
    except OSError:
        pass                                   # already a session leader
    try:
        lib = ctypes.CDLL(LIBRARY)
        ctl = socket.socket(fileno=fd)
        start = protocol.recv(ctl)
        if start.get("op") != "start" or start["argv"][1:2] != ["-m"]:
            raise ValueError(f"expected a start frame for `python -m ...`, got {start['op']!r}")
        err = lib.snapagent_confine(int(start.get("uid", 0)), int(start.get("gid", 0)),
                                    int(bool(start.get("seccomp", True))))
        if err:
            raise OSError(-err, f"confine: {os.strerror(-err)}")
        r, w = os.pipe()
        os.dup2(w, 1)
        os.dup2(w, 2)
        os.close(w)
        os.environ.clear()
        os.environ.update(start["env"])
        ctl.detach()
        err = lib.snapagent_start(fd, -1, r, start.get("init_type", "on-demand").encode())
        if err:
            raise OSError(-err, f"agent: {os.strerror(-err)}")
    except Exception as exc:                   # noqa: BLE001 - reported to the host
        with socket.socket(fileno=os.dup(fd)) as report:
            protocol.send(report, {"op": "fatal",
                                   "message": f"sandbox failed to start: {exc!r}"})
        os._exit(1)
    os.register_at_fork(after_in_child=lib.snapagent_forget)
    _hand_over_exit(lib)

    # The function's view: `python -m MODULE ARG...` run from its code directory.
    status = 0
    try:
        cwd = start["cwd"]
        os.chdir(cwd)
        path = [p for p in start.get("pythonpath", ()) if p]
        sys.path[:] = [cwd] + path + [p for p in sys.path[1:] if p not in path]
        module_args = start["argv"][2:]
        sys.argv = list(module_args)
        runpy.run_module(module_args[0], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        status = _exit_code(exc)
    except BaseException:                      # noqa: BLE001 - reported, then we exit
        traceback.print_exc()
        status = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:                          # noqa: BLE001 - a closed or broken stream
        pass
    lib.snapagent_exit(status)
