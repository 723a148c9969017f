"""Event source mappings: RabbitMQ and SQS (issue 15; being built)."""

from __future__ import annotations

from typing import Any


class Mappings:
    def __init__(self, service: Any) -> None:
        self.service = service

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
