"""What ``snapstart serve`` runs for the triggers (the one hook server.py calls).

    install(app, service)  before the server starts: HTTP routes for function URLs and
                           HttpApi/Api events (http.py: one catch-all route, registered
                           after the Invoke API's, that reads the current config)
    start(service)         after it started: provisioned concurrency from the config
                           (clones restored in the background), the scheduler
                           (schedule.py) and the event source mappings (queues.py), each
                           on its own threads; returns what ``stop`` takes
    stop(running)          before the manager closes: both stopped, in-flight batches
                           finished or left unacknowledged (never lost)

Each trigger module reads ``triggers.json`` (config.py) itself and follows its changes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["install", "start", "stop"]


def install(app: Any, service: Any) -> None:
    from . import http
    http.install(app, service)


def start(service: Any) -> list[Any]:
    from .queues import Mappings
    from .schedule import Scheduler

    _provision(service)
    running: list[Any] = []
    for cls in (Scheduler, Mappings):
        runner = cls(service)
        runner.start()
        running.append(runner)
    return running


def stop(running: list[Any]) -> None:
    for runner in reversed(running):
        runner.stop()


def _provision(service: Any) -> None:
    """``provisioned`` entries (a deploy's ProvisionedConcurrencyConfig): set, not
    waited for; one that cannot be set is logged and the rest go on."""
    import logging

    from ..errors import SnapStartError
    from . import config

    log = logging.getLogger("snapstart.triggers")
    try:
        entries = config.load(service.settings.home).provisioned
    except SnapStartError as exc:
        log.error("trigger configuration unreadable: %s", exc.message)
        return
    for entry in entries:
        try:
            service.manager.set_provisioned(entry["function"], entry.get("qualifier"),
                                            int(entry["n"]))
        except (SnapStartError, KeyError, TypeError, ValueError) as exc:
            log.error("provisioned concurrency for %s not set: %s", entry.get("function"),
                      getattr(exc, "message", exc))
