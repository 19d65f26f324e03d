"""Fate sharing for an embedded local Ray: when the driver dies, even by SIGKILL, its Ray processes die too.

Ray 2.60 ends most of a local cluster with its driver, but its dashboard agent and runtime-env
agent outlive a SIGKILL of the driver (measured: still there 30 s later; tests/e2e/test_driver_kill.py),
and a leftover agent keeps ports open and a stale session around. `watch_driver()` starts a small
watchdog process that records the driver's descendants every half second (from /proc, so it needs
nothing but Linux) and, once the driver is gone, SIGKILLs those that are still the same processes
(same start time: a recycled pid is never hit). It only ever kills the driver's own descendants,
never its process group (which may be the shell's or a test runner's).

A descendant recorded is not enough: a worker the raylet spawns around the driver's death (an
actor being started or restarted) was never seen, leads a process group of its own, and once its
parent dies nobody's lineage leads to it (the chaos campaign found one alive 25 s after a driver
kill). So the watchdog also notes the Ray sessions its descendants belong to (every Ray process
names its session folder, `session_<date>_<time>_<micros>_<pid>`, on its command line) and,
after the driver is gone, sweeps for processes of those sessions until none has turned up for
`SWEEP_S`.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 0.5
SWEEP_S = 3.0   # after the driver died: sweep until no process of its Ray sessions turned up for this long
RAY_SESSION = re.compile(r"session_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_\d+_\d+")


def watch_driver(pid: int | None = None) -> subprocess.Popen | None:
    """Start the watchdog for `pid` (default: this process). No-op where /proc is missing."""
    if not Path("/proc/self/stat").exists():
        return None
    return subprocess.Popen([sys.executable, "-m", "cluster.fate", str(pid or os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)   # not in the driver's group: a group kill leaves it to clean up


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()   # the command name may hold spaces and parentheses
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def same_process(pid: int, started: int) -> bool:
    """Is `pid` still the process that started at `started` (not gone, not a recycled pid)?"""
    st = _stat(pid)
    return st is not None and st[1] == started


def group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def descendants(root: int) -> dict[int, int]:
    """pid → start time of every live descendant of `root`."""
    children: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            children.setdefault(st[0], []).append(int(entry))
            started[int(entry)] = st[1]
    found: dict[int, int] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in found and pid in started:
            found[pid] = started[pid]
            todo.extend(children.get(pid, []))
    return found


def ray_sessions(pids) -> set[str]:
    """The Ray sessions (folder names) that these processes' command lines name."""
    return {m for pid in pids for m in RAY_SESSION.findall(command_line(pid))}


def session_members(sessions: set[str]) -> dict[int, int]:
    """pid → start time of every live process whose command line names one of `sessions`."""
    found: dict[int, int] = {}
    if not sessions:
        return found
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            if any(s in command_line(int(entry)) for s in sessions):
                found[int(entry)] = st[1]
    return found


def watch(driver: int) -> int:
    me = os.getpid()
    seen: dict[int, int] = {}
    sessions: set[str] = set()
    while _stat(driver) is not None:
        found = descendants(driver)
        sessions |= ray_sessions(pid for pid in found if pid not in seen)
        seen.update(found)
        seen.pop(me, None)
        time.sleep(POLL_S)
    quiet_since = time.monotonic()
    while True:
        targets = {pid: started for pid, started in seen.items() if same_process(pid, started)}
        targets.update(session_members(sessions))
        targets.pop(me, None)
        for pid in targets:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if targets:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= SWEEP_S:
            return 0
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(watch(int(sys.argv[1])))
