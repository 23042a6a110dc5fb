"""The agent shipped over stdin to a Python that cannot import mpish (``python -S -I``)."""

from __future__ import annotations

import shlex
import sys
from typing import Any

import cloudpickle
import pytest
from sshd_server import SshServer

import mpish
from mpish.ssh import RemoteError, connect

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # not importable remotely

BARE = [sys.executable, "-S", "-I"]  # no site-packages, no PYTHON* variables: no mpish, msgpack, cloudpickle


def remote_facts() -> dict[str, Any]:
    import importlib.util
    import sys

    import msgpack

    return {
        "no_site": sys.flags.no_site,
        "agent_origin": sys.modules["mpish.calls.agent"].__spec__.origin,
        "msgpack": msgpack.Unpacker.__module__,
        "installed_mpish": importlib.util.find_spec("mpish").origin,
    }


def test_bootstrap_runs_calls_where_mpish_is_not_installed(sshd: SshServer) -> None:
    with connect("host1", python=BARE, ssh_options=sshd.ssh_options) as remote:
        assert remote.info.mpish_version == mpish.__version__
        facts = remote.call(remote_facts)
        assert facts["no_site"] == 1
        assert facts["agent_origin"] == "<mpish shipped>/mpish/calls/agent.py"
        assert facts["installed_mpish"] == "<mpish shipped>/mpish/__init__.py"
        assert facts["msgpack"] == "msgpack.fallback"  # the shipped pure-Python copy
        assert remote.call(lambda x: x * 2, 21) == 42
        assert remote.call_data("os.getpid") == remote.info.pid
        assert remote.shell("exit 5") == 5
        with pytest.raises(ZeroDivisionError):
            remote.call(lambda: 1 / 0)
        with pytest.raises(ValueError) as caught:  # raised inside the shipped agent
            remote.call_data("mpish.calls.agent:resolve", "nodots")
        assert isinstance(caught.value, RemoteError)
        assert 'raise ValueError(f"not a dotted function name' in caught.value.remote_traceback  # linecache


def test_python_as_one_string_is_split_into_words_as_mpish_ssh_python_is(sshd: SshServer) -> None:
    with connect("host1", python=shlex.join(BARE), ssh_options=sshd.ssh_options) as remote:
        assert remote.call(remote_facts)["no_site"] == 1  # -S reached python as its own word
    with pytest.raises(ValueError, match=r"No closing quotation.*pass a list of words"):
        connect("host1", python="python3 'unbalanced", ssh_options=sshd.ssh_options)


def test_bootstrap_prefers_an_installed_msgpack(connect_options: dict[str, object]) -> None:
    with connect("host2", **connect_options) as remote:  # type: ignore[arg-type]
        assert remote.call(remote_facts)["msgpack"] == "msgpack._cmsgpack"


def test_bootstrapped_data_only_agent_never_unpickles(sshd: SshServer) -> None:
    with connect("host3", python=BARE, ssh_options=sshd.ssh_options, data_only=True) as remote:
        assert remote.info.data_only
        assert remote.call_data("operator.neg", 4) == -4
        with pytest.raises(PermissionError):
            remote.call(abs, -1)
