"""What the ``mpish ssh -c true`` client loads, and what it has loaded when its ssh processes start.

The console's own CPU competes with its ssh clients (and, on one machine, with the hosts):
what it imports before the first ssh starts delays every host, and what a command that
prints nothing never needs is not imported at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ssh_util import SRC
from sshd_server import SshServer

# Imported by the client where they are used, after the ssh processes have started: the
# payload cache's key and paths (hashlib, pathlib with urllib.parse) and the import scan (ast
# is loaded before anyway by dataclasses' inspect, so it is not listed).
NOT_BEFORE_SSH = ("hashlib", "_hashlib", "pathlib", "urllib.parse")
# Not imported at all for a command that prints nothing: the grouped output's spool files
# (tempfile, with random and shutil's friends), the JSON encoder (--json only), and dataclasses
# (with inspect, ast and dis; ~7 ms, and ~0.6 ms of generated code per class); for one range
# of hosts, ClusterShell's NodeSet (with logging and configparser, ~8 ms); shutil (bz2, lzma),
# which argparse imports to find the terminal's width for its help.
NOT_FOR_TRUE = ("tempfile", "random", "json", "dataclasses", "inspect", "ClusterShell.NodeSet", "logging",
                "configparser", "shutil")

# Runs mpish's command line with an audit hook: the modules loaded when the first ssh process
# was started, and all the modules loaded by the end, written as JSON to the file in argv[1].
CLIENT = """
import sys
report = sys.argv.pop(1)
seen = {}
def hook(event, args):
    if event == "subprocess.Popen" and "at_ssh" not in seen and "-G" not in args[1]:  # not the cipher check
        seen["at_ssh"] = sorted(sys.modules)
sys.addaudithook(hook)
from mpish.cli import main
try:
    code = main(sys.argv[1:])
finally:
    at_end = sorted(sys.modules)
    import json
    with open(report, "w") as out:
        json.dump({"at_ssh": seen.get("at_ssh", []), "at_end": at_end}, out)
sys.exit(code)
"""


def client_modules(sshd: SshServer, report: str, *args: str) -> tuple[set[str], set[str]]:
    argv = [sys.executable, "-c", CLIENT, report, "ssh", "-o", " ".join(sshd.ssh_options),
            "--python", sys.executable, *args]
    env = dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    with open(report, encoding="utf-8") as file:
        seen = json.load(file)
    assert seen["at_ssh"], "no ssh process was started"
    return set(seen["at_ssh"]), set(seen["at_end"])


def test_the_ssh_processes_start_before_hashlib_and_pathlib_are_imported(
    sshd: SshServer, tmp_path: Path
) -> None:
    at_ssh, at_end = client_modules(sshd, f"{tmp_path}/modules.json", "host[1-2]", "-c", "true")
    assert "mpish.transport.ship" in at_ssh and "hashlib" in at_end  # the payload was keyed after
    assert sorted(at_ssh.intersection(NOT_BEFORE_SSH)) == []


def test_a_command_that_prints_nothing_loads_no_tempfile_json_dataclasses_or_nodeset_in_the_client(
    sshd: SshServer, tmp_path: Path
) -> None:
    _, at_end = client_modules(sshd, f"{tmp_path}/modules.json", "host[1-2]", "-c", "true")
    assert "mpish.shell.grouping" in at_end
    assert sorted(at_end.intersection(NOT_FOR_TRUE)) == []


def test_output_and_json_still_load_what_they_need(sshd: SshServer, tmp_path: Path) -> None:
    _, grouped = client_modules(sshd, f"{tmp_path}/grouped.json", "host[1-2]", "-c", "echo hi")
    assert "tempfile" in grouped
    _, as_json = client_modules(sshd, f"{tmp_path}/json.json", "host[1-2]", "--json", "-c", "true")
    assert "json" in as_json
