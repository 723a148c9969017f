"""Schedule/ScheduleV2 events (issue 15; being built)."""

from __future__ import annotations

from typing import Any


class Scheduler:
    def __init__(self, service: Any) -> None:
        self.service = service

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
