"""The console's own deadline for a running command (shell/silence.py): a server silent for
ANSWER_GRACE seconds past its command's timeout, or past the third Ctrl-C, is given up; one
that is heard from is not; without a timeout or a third Ctrl-C nobody ever is; and silence
counts only up to the last time the console had read everything that had arrived."""

from __future__ import annotations

from mpish.shell.silence import ANSWER_GRACE, SilenceWatch


def silent_at(watch: SilenceWatch, running: list[int], now: float) -> dict[int, str]:
    """What is given up at ``now`` by a console that kept looking (every 4 s, here; many times
    a second in life) and has just read everything."""
    looked = watch.drained
    while looked + 4 < now:
        looked += 4
        watch.listened(looked)
    watch.listened(now)
    return watch.silent(running)


def test_a_job_suspended_past_the_deadline_is_not_given_up_at_its_resume() -> None:
    """`scontrol suspend` of the job during a command with `:timeout 5`: at the resume the
    console gave up every server (no answer 10 s after its timeout) and aborted the session
    (a Slurm user's review). The console was stopped too: that time is nobody's silence."""
    watch = SilenceWatch(timeout=5, now=100.0)
    watch.started([1, 2], 100.0)
    watch.listened(103.0)
    watch.listened(103.0 + 20)  # stopped 20 s with the whole job, looking again at the resume
    assert watch.silent([1, 2]) == {}
    assert silent_at(watch, [1, 2], 125.0 + ANSWER_GRACE - 0.1) == {}  # the 2 s left, then the grace
    assert sorted(silent_at(watch, [1, 2], 125.0 + ANSWER_GRACE + 0.1)) == [1, 2]


def test_a_server_silent_past_its_timeout_and_the_grace_is_given_up_with_why() -> None:
    watch = SilenceWatch(timeout=5, now=100.0)
    watch.started([1, 2], 100.0)
    assert silent_at(watch, [1, 2], 105.0 + ANSWER_GRACE - 0.1) == {}
    gone = silent_at(watch, [1, 2], 105.0 + ANSWER_GRACE)
    assert sorted(gone) == [1, 2]
    assert gone[1].startswith(f"no answer {ANSWER_GRACE:g} s after its 5 s timeout: its server or host")


def test_a_server_heard_from_after_its_deadline_is_not_given_up_until_silent_again() -> None:
    watch = SilenceWatch(timeout=5, now=100.0)
    watch.started([1, 2], 100.0)
    watch.heard_from(1, 112.0)  # its Signalled, its output: alive, escalating
    assert list(silent_at(watch, [1, 2], 105.0 + ANSWER_GRACE)) == [2]
    assert silent_at(watch, [1], 112.0 + ANSWER_GRACE - 0.1) == {}
    assert list(silent_at(watch, [1], 112.0 + ANSWER_GRACE)) == [1]


def test_the_deadline_counts_from_when_each_run_was_sent() -> None:
    watch = SilenceWatch(timeout=5, now=100.0)
    watch.started([1], 100.0)
    watch.started([2], 130.0)  # -f: its turn came later
    assert list(silent_at(watch, [1, 2], 135.0 + ANSWER_GRACE - 1)) == [1]


def test_without_a_timeout_only_the_third_ctrl_c_makes_a_server_due() -> None:
    watch = SilenceWatch(timeout=0, now=100.0)
    watch.started([1], 100.0)
    assert silent_at(watch, [1], 1e6) == {}  # a command may run for days
    watch.killed(200.0)
    assert silent_at(watch, [1], 200.0 + ANSWER_GRACE - 0.1) == {}
    assert "after the SIGKILL of the third Ctrl-C" in silent_at(watch, [1], 200.0 + ANSWER_GRACE)[1]


def test_a_console_that_could_not_read_for_a_while_calls_nobody_silent_before_reading() -> None:
    """Its terminal paused (Ctrl-S) for a minute past the deadline: the servers' answers wait
    unread; counting silence up to now gave them all up."""
    watch = SilenceWatch(timeout=5, now=100.0)
    watch.started([1], 100.0)
    watch.listened(101.0)  # then the console blocked writing for a minute
    assert watch.silent([1]) == {}  # at 161 s, before reading: not silent
    watch.heard_from(1, 161.0)  # the records that waited
    assert silent_at(watch, [1], 161.5) == {}
