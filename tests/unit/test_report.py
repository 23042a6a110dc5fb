"""mpish.report: one format for messages to the user; logging only when asked (--debug, MPISH_DEBUG)."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from mpish import report


@pytest.fixture
def clean_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("mpish")
    handlers, level = list(logger.handlers), logger.level
    try:
        yield logger
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)


def test_a_message_is_one_prefixed_line_and_a_multi_line_one_starts_on_its_own() -> None:
    assert report.message("rank 2 was lost") == "mpish: rank 2 was lost"
    assert report.message("first\nsecond") == "mpish:\nfirst\nsecond"


def test_reporter_names_the_speaker_and_writes_to_stderr_at_the_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report.Reporter(who="rank 3: ").say("the console is gone")
    stream = io.StringIO()
    report.Reporter(stream).say("to a stream")
    assert capsys.readouterr().err == "mpish: rank 3: the console is gone\n"
    assert stream.getvalue() == "mpish: to a stream\n"


def test_logging_is_off_unless_asked(monkeypatch: pytest.MonkeyPatch, clean_logger: logging.Logger) -> None:
    monkeypatch.setenv(report.DEBUG_VARIABLE, "0")  # recorded, so restored after the test
    assert report.setup_logging() is False
    assert not clean_logger.isEnabledFor(logging.DEBUG)


def test_debug_logs_to_stderr_once_and_is_inherited_by_children(
    monkeypatch: pytest.MonkeyPatch, clean_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(report.DEBUG_VARIABLE, "0")  # recorded, so restored after the test
    assert report.setup_logging(True) and report.setup_logging(None)  # twice: still one handler
    logging.getLogger("mpish.somewhere").debug("a diagnostic")
    err = capsys.readouterr().err
    assert err.count("a diagnostic") == 1 and "mpish.somewhere: a diagnostic" in err, err
    child = subprocess.run([sys.executable, "-c", "from mpish import report; print(report.debugging())"],
                           capture_output=True, text=True, check=True)
    assert child.stdout == "True\n"  # --debug reaches the processes mpish starts


def test_cli_reports_an_mpish_error_in_the_one_format(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from mpish import cli

    monkeypatch.setenv("MPISH_HOME", str(tmp_path) + "/absent")
    assert cli.main(["keys"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mpish: ") and err.count("\n") == 1, err


def test_reporter_paints_each_message_when_asked() -> None:
    stream = io.StringIO()
    report.Reporter(stream, paint=lambda line: f"<{line}>").say("unknown built-in :x (see :help)")
    assert stream.getvalue() == "<mpish: unknown built-in :x (see :help)>\n"


DIAGNOSTICS = """
import sys
from mpish import report
from mpish.comm import limits  # a library module with a warning (a dropped record)
assert "logging" not in sys.modules, "loaded before any record"
limits.log.warning("dropped before logging was loaded")
assert "logging" not in sys.modules, "loaded for a record nobody can see"
import logging
limits.log.warning("no handler: silent, not Python's last resort")
logging.basicConfig(format="%(name)s %(message)s")
limits.log.warning("an application's handler sees it")
report.setup_logging(True)
report.Diagnostics("mpish.x").debug("debug %s", "on")
"""


def test_diagnostics_load_logging_only_when_a_record_can_be_seen_and_stay_silent_without_handlers() -> None:
    child = subprocess.run([sys.executable, "-c", DIAGNOSTICS], capture_output=True, text=True, check=True)
    lines = child.stderr.splitlines()
    assert lines[0] == "mpish.comm an application's handler sees it", child.stderr
    assert any(line.endswith("mpish.x: debug on") for line in lines[1:]), child.stderr
    assert "silent" not in child.stderr and "before" not in child.stderr
