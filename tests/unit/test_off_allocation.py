"""shell/app.py off_allocation: a Slurm job's shell on a host that is not one of the job's nodes
(salloc on a login node), where `mpish -n K` starts its servers on that host."""

from __future__ import annotations

import socket

import pytest

from mpish.shell.app import off_allocation


@pytest.fixture(autouse=True)
def _no_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_NODELIST", "SLURMD_NODENAME"):
        monkeypatch.delenv(name, raising=False)


def test_outside_any_job_nothing_is_said() -> None:
    assert off_allocation() == ""


def test_a_jobs_shell_on_another_host_is_named_with_the_jobs_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "cn[1-4]")
    said = off_allocation()
    assert "Slurm job 4242" in said and socket.gethostname() in said and "cn[1-4]" in said


@pytest.mark.parametrize("variable", ["SLURM_JOB_NODELIST", "SLURM_NODELIST"])
def test_on_one_of_the_jobs_nodes_nothing_is_said(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv(variable, f"cn[1-4],{socket.gethostname().split('.')[0]}")
    assert off_allocation() == ""


def test_a_node_list_that_cannot_be_read_says_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "cn[1-")
    assert off_allocation() == ""


def test_a_shell_slurmd_started_is_on_one_of_the_jobs_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node whose Slurm NodeName is not its host name (NodeHostname) is still the job's."""
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "cn[1-4]")
    monkeypatch.setenv("SLURMD_NODENAME", "cn2")
    assert off_allocation() == ""
