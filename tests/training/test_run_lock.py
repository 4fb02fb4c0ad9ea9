"""The output folder's lock: one run at a time, a dead run's lock taken over."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from retinacli.errors import UsageError
from retinacli.training.run_lock import LOCK_NAME, RunLock


def test_a_held_lock_refuses_a_second_holder_until_released(tmp_path):
    first = RunLock(tmp_path)
    assert first.acquire() is None
    assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    with pytest.raises(UsageError, match=rf"another `retina train` is using this output folder \(pid {os.getpid()} on "):
        RunLock(tmp_path).acquire()
    first.release()
    with RunLock(tmp_path) as again:
        assert again.acquire() is None  # a released lock names no one: nothing to report
        again.release()


def test_the_lock_of_a_process_that_is_gone_is_taken_over(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import sys, os; from retinacli.training.run_lock import RunLock; "
         "RunLock(sys.argv[1]).acquire(); os._exit(9)", str(tmp_path)],
        check=False,
    )
    assert dead.returncode == 9
    owner_pid = int((tmp_path / LOCK_NAME).read_text().split()[0])
    lock = RunLock(tmp_path)
    previous = lock.acquire()
    assert previous is not None and previous.pid == owner_pid
    assert previous.describe().startswith(f"pid {owner_pid} on ")
    lock.release()
