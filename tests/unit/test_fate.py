"""The fate watchdog and the process accounting the chaos campaign uses after a driver's SIGKILL:
real processes (a shell standing in for the driver, `sleep`s for what it started), no Ray."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from cluster import fate

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")


def _wait(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.slow  # real processes and the watchdog's 3 s sweep: ~5 s
def test_a_killed_driver_leaves_none_of_its_processes_behind():
    # the "driver" starts two children (one in a session of its own, out of its group) and its watchdog
    driver = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         "from cluster.fate import watch_driver\n"
         "subprocess.Popen(['sleep', '300'])\n"
         "subprocess.Popen(['sleep', '301'], start_new_session=True)\n"
         "watch_driver()\n"
         "time.sleep(300)\n"],
        start_new_session=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert _wait(lambda: len(fate.descendants(driver.pid)) >= 3)   # 2 sleeps + the watchdog
        time.sleep(1.0)                                                 # the watchdog has seen them (0.5 s polls)
        started = fate.descendants(driver.pid)
        in_group = set(fate.group_members(driver.pid))
        assert driver.pid in in_group and len(in_group) >= 2            # the driver and its own-group sleep
        os.kill(driver.pid, signal.SIGKILL)                             # the driver alone
        driver.wait(timeout=10)
        assert _wait(lambda: not any(fate.same_process(p, t) for p, t in started.items())), \
            [fate.command_line(p) for p, t in started.items() if fate.same_process(p, t)]
        assert fate.group_members(driver.pid) == []
    finally:
        for pid in fate.group_members(driver.pid):
            os.kill(pid, signal.SIGKILL)


def test_a_recycled_pid_is_not_the_same_process():
    child = subprocess.Popen(["sleep", "30"])
    started = fate.descendants(os.getpid())[child.pid]
    assert fate.same_process(child.pid, started)
    assert not fate.same_process(child.pid, started + 1)      # same pid, another start time
    assert "sleep 30" in fate.command_line(child.pid)
    child.kill()
    child.wait()
    assert not fate.same_process(child.pid, started)
