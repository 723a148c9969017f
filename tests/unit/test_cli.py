"""The CLI's error boundary (snapstart/cli.py): one line and an exit code, a
traceback only with --debug. No root, no CRIU."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from snapstart import cli
from snapstart.errors import FunctionNotFoundError


@pytest.fixture
def boom():
    """A throwaway command raising what the test hands it."""
    box: dict = {}

    @cli.main.command("boom-test")
    def _boom() -> None:
        raise box["exc"]

    yield box
    cli.main.commands.pop("boom-test")


@pytest.mark.parametrize("exc, code, line", [
    (FunctionNotFoundError("Function not found: x"), 1,
     "snapstart: error: ResourceNotFoundException: Function not found: x"),
    (PermissionError(13, "Permission denied", "/var/lib/snapstart/x"), 1,
     "snapstart: error: Permission denied: /var/lib/snapstart/x"),
    (RuntimeError("oops\nsecond line"), 2,
     "snapstart: error: internal error: RuntimeError: oops second line (rerun with "
     "--debug for the traceback)"),
])
def test_errors_end_in_one_line_and_an_exit_code(boom, exc, code, line):
    boom["exc"] = exc
    result = CliRunner().invoke(cli.main, ["boom-test"])
    assert result.exit_code == code
    assert result.stderr.strip() == line
    assert "Traceback" not in result.output


def test_debug_shows_the_exception(boom):
    boom["exc"] = RuntimeError("oops")
    result = CliRunner().invoke(cli.main, ["--debug", "boom-test"])
    assert isinstance(result.exception, RuntimeError)


def test_click_usage_errors_pass_through(boom):
    boom["exc"] = click.UsageError("bad usage")
    result = CliRunner().invoke(cli.main, ["boom-test"])
    assert result.exit_code == 2 and "bad usage" in result.stderr
