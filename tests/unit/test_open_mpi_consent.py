"""The embedded Open MPI's two consents (MPISH_ALLOW_PRTE, and as root Open MPI's own) are
named at once when both are missing (helper-138: one refusal, then after fixing it the other)."""

from __future__ import annotations

import os

import pytest

from mpish.shell.open_mpi import open_mpi_refused

CONSENTS = ("MPISH_ALLOW_PRTE", "OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM",
            "PRTE_ALLOW_RUN_AS_ROOT", "PRTE_ALLOW_RUN_AS_ROOT_CONFIRM")


@pytest.mark.skipif(os.geteuid() != 0, reason="Open MPI's refusal of root")
def test_both_missing_consents_are_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CONSENTS:
        monkeypatch.delenv(name, raising=False)
    said = open_mpi_refused("Open MPI v5.0.8")
    assert said.startswith("not starting Open MPI's launcher (prte)") and "MPISH_ALLOW_PRTE=1" in said, said
    assert "; also, Open MPI refuses to run as root: set OMPI_ALLOW_RUN_AS_ROOT=1 and" in said, said
    assert "\n" not in said
    monkeypatch.setenv("MPISH_ALLOW_PRTE", "1")
    assert open_mpi_refused("Open MPI v5.0.8").startswith("Open MPI refuses to run as root")


def test_mpich_and_given_consents_refuse_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CONSENTS:
        monkeypatch.setenv(name, "1")
    assert open_mpi_refused("Open MPI v5.0.8") == ""
    assert open_mpi_refused("MPICH Version: 4.3") == ""
