"""One writer per directory: `vrp.runs.lock.directory_lock` between real processes, threads,
and `vrp run` refusing a directory another process holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from vrp.runs.lock import LOCK_FILE, DirectoryLockedError, directory_lock, read_holder

HOLDER = """
import sys, time
from vrp.runs.lock import directory_lock
with directory_lock(sys.argv[1], what="study"):
    print("held", flush=True)
    time.sleep(600)
"""


def _hold(d: Path) -> subprocess.Popen:
    """A second process that takes the lock of ``d`` and keeps it until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(d)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_the_lock_records_its_holder_and_is_released(tmp_path):
    d = tmp_path / "run"
    with directory_lock(d, what="run") as path:
        assert path == d / LOCK_FILE
        rec = read_holder(d)
        assert rec["pid"] == os.getpid() and rec["what"] == "run" and rec["since"]
        with directory_lock(d):  # re-entrant in the holding thread
            assert read_holder(d)["pid"] == os.getpid()
        errors = []

        def other_thread():
            try:
                with directory_lock(d):
                    pass
            except DirectoryLockedError as e:
                errors.append(e)

        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        assert len(errors) == 1 and f"process {os.getpid()}" in str(errors[0])
    assert read_holder(d) == {}  # released: no stale holder left in the file
    with directory_lock(d):  # and free again
        pass


def test_a_second_process_is_refused_and_a_killed_holder_frees_the_lock(tmp_path):
    d = tmp_path / "study"
    proc = _hold(d)
    try:
        with pytest.raises(DirectoryLockedError) as err, directory_lock(d, what="study"):
            pass
        assert err.value.holder["pid"] == proc.pid and err.value.holder["what"] == "study"
        msg = str(err.value)
        assert f"{d} is in use by process {proc.pid}" in msg and f"kill {proc.pid}" in msg
    finally:
        proc.send_signal(signal.SIGKILL)  # no cleanup runs: the OS drops the lock with the process
        proc.wait()
    assert json.loads((d / LOCK_FILE).read_text())["pid"] == proc.pid  # the dead holder's record stays
    with directory_lock(d, what="study"):
        assert read_holder(d)["pid"] == os.getpid()


def test_vrp_run_on_a_directory_in_use_is_refused_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from vrp.cli import app

    out = tmp_path / "run"
    (out / "shards").mkdir(parents=True)
    (out / "manifest.json").write_text("{}")
    keep = out / "shards" / "items-00000000-00000002.parquet"
    keep.write_bytes(b"another process's batch")
    proc = _hold(out)
    try:
        # --force would wipe the directory: it must not get that far either
        res = CliRunner().invoke(app, ["run", "--answer-only", "--out", str(out), "--force"])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert res.exit_code == 2
    assert f"is in use by process {proc.pid}" in " ".join(res.output.split())
    assert keep.read_bytes() == b"another process's batch" and (out / "manifest.json").read_text() == "{}"
