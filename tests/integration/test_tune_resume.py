"""`python -m training.tune ... --resume` after the search was killed, then interrupted, mid-run.

The search (3 DQN trials, one after another) runs as a subprocess with its own private local Ray
(no --ray-address, RAY_ADDRESS removed: `ray.init(address="local")`) in its own session.

1. Once Tune's stored experiment state shows a finished trial and an unfinished one that has a
   checkpoint, the whole process group is frozen (SIGSTOP, so the state on disk is the one we
   read) and killed (SIGKILL); whatever of that private Ray is still alive is killed by pid (found
   by session and by its Ray session folder, never with `ray stop`).
2. `--resume`; once the third trial runs and has its MLflow run, Ctrl-C (SIGINT to the group):
   the command must stop without selecting or registering anything.
3. `--resume` again, to the end.

Then: finished trials were never trained again and kept their results, the unfinished ones went
on from their checkpoint (or, without one, started again) in their own MLflow run, three trials in
all with one MLflow run each, and the best of the three registered once."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TRIALS = 3
# one CPU: max_concurrent_trials = 1, trials run one after another. 9 iterations make ASHA's grace
# period 3: every trial stays RUNNING from its first checkpoint to at least its third, a window of
# a few iterations in which the kill finds a finished trial and an unfinished checkpointed one.
MAX_ITERS = 9


def _experiment_state(exp_dir: Path) -> dict | None:
    """trial_id -> status and last result, from Tune's newest stored experiment state (None while
    there is none, or while the file is being written)."""
    files = sorted(exp_dir.glob("experiment_state-*.json"))
    if not files:
        return None
    try:
        data = json.loads(files[-1].read_text())
    except (OSError, ValueError):
        return None
    trials = {}
    for trial_json, meta_json in data["trial_data"]:
        t = json.loads(trial_json) if isinstance(trial_json, str) else trial_json
        m = json.loads(meta_json) if isinstance(meta_json, str) else meta_json
        last = m.get("last_result") or {}
        trials[t["trial_id"]] = {"status": t["status"], "iteration": last.get("training_iteration") or 0,
                                 "val_sharpe": last.get("val_sharpe"), "run_id": last.get("run_id"),
                                 "done": bool(last.get("done"))}
    return trials


def _private_ray(leader: int) -> list:
    """Live processes of the search started as session leader `leader`: its session, and anything
    whose command line names its Ray session folder (/tmp/ray/session_<date>_<driver pid>)."""
    import psutil

    folder = re.compile(rf"session_\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_{leader}(?!\d)")
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE or p.pid == os.getpid():
                continue
            if os.getsid(p.pid) == leader or any(folder.search(a) for a in p.info["cmdline"] or ()):
                found.append(p)
        except (OSError, psutil.Error):
            continue
    return found


def _kill_search(proc: subprocess.Popen) -> None:
    """SIGKILL the search's process group, then whatever of its private Ray is still alive, by pid."""
    import psutil

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    deadline = time.time() + 30
    left = _private_ray(proc.pid)
    while left and time.time() < deadline:
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        time.sleep(0.5)
        left = _private_ray(proc.pid)
    assert not left, f"processes of the killed search's Ray still alive: {left}"


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def _history(c, run_id: str) -> list[tuple]:
    return sorted((m.step, m.value, m.timestamp) for m in c.get_metric_history(run_id, "val_sharpe"))


def _start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as f:  # a new session: its own process group, signalled as a whole
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(proc: subprocess.Popen, exp_dir: Path, log: Path, ready, what: str, timeout: float = 360) -> dict:
    """Poll until `ready(Tune's stored state)`, then freeze the process group and check again: returns
    the state, with the group left frozen, once `ready` holds while nothing runs any more. Fails
    (never skips) if the search ends first."""
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the search ended (rc {proc.returncode}) before {what}; last state "
                        f"{_experiment_state(exp_dir)}\n{_tail(log)}")
        if time.time() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s; last state {_experiment_state(exp_dir)}\n{_tail(log)}")
        if ready(_experiment_state(exp_dir)):
            os.killpg(proc.pid, signal.SIGSTOP)  # frozen: nothing writes the state any more
            state = _experiment_state(exp_dir)
            if ready(state):
                return state
            os.killpg(proc.pid, signal.SIGCONT)  # it moved on (or was writing) in between: look again
        time.sleep(0.05)


def _runs(c, exp_id: str) -> dict:
    runs = c.search_runs([exp_id])
    by_trial = {r.data.tags["trial_id"]: r for r in runs}
    assert len(by_trial) == len(runs), [(r.data.tags["trial_id"], r.info.run_id) for r in runs]  # one run per trial
    return by_trial


def test_search_killed_then_interrupted_resumes_to_one_complete_search(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "KRT_MLFLOW_DIR")}
    env.update(MLFLOW_TRACKING_URI=uri, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    out = tmp_path / "out.json"
    cmd = [sys.executable, "-m", "training.tune", "--algo", "dqn", "--smoke", "--num-samples", str(TRIALS),
           "--max-iters", str(MAX_ITERS), "--seeds", "1", "--num-cpus", "1",  # its own local Ray, 1 CPU
           "--storage", str(tmp_path / "tune"), "--mlflow-dir", str(tmp_path / "unused"), "--json", str(out)]
    exp_dir = tmp_path / "tune" / "krt-dqn-search"
    logs = [tmp_path / "first.log", tmp_path / "resume1.log", tmp_path / "resume2.log"]
    c = MlflowClient(uri, registry_uri=uri)  # not a registry URI another test set process-wide
    times, procs = [time.time()], []
    try:
        # 1. SIGKILL once one trial has finished and the next has a checkpoint
        procs.append(_start(cmd, env, logs[0]))
        at_kill = _wait_for(procs[0], exp_dir, logs[0], lambda s: bool(s) and (
            sum(t["status"] == "TERMINATED" for t in s.values()) == 1
            and any(t["status"] == "RUNNING" and t["iteration"] >= 1 for t in s.values())), "a kill point")
        _kill_search(procs[0])
        times.append(time.time())
        done1 = {i for i, t in at_kill.items() if t["status"] == "TERMINATED"}
        (second,) = set(at_kill) - done1
        assert not out.exists()
        exp_id = c.get_experiment_by_name("rl-agents").experiment_id
        runs_kill = _runs(c, exp_id)
        assert set(runs_kill) == set(at_kill), (at_kill, list(runs_kill))
        hist_kill = {i: _history(c, runs_kill[i].info.run_id) for i in done1}

        # 2. --resume, then Ctrl-C once the third trial has opened its MLflow run but not yet
        # reported (its first iteration takes seconds): it has no checkpoint to continue from
        procs.append(_start(cmd + ["--resume"], env, logs[1]))

        def third_started(_state):
            return any(r.data.tags["trial_id"] not in at_kill and "val_sharpe" not in r.data.metrics
                       for r in c.search_runs([exp_id]))

        _wait_for(procs[1], exp_dir, logs[1], third_started, "a started third trial")
        os.killpg(procs[1].pid, signal.SIGINT)  # what Ctrl-C in a terminal does, delivered on...
        os.killpg(procs[1].pid, signal.SIGCONT)  # ...waking the frozen group
        try:
            rc = procs[1].wait(timeout=180)
        except subprocess.TimeoutExpired:
            pytest.fail(f"Ctrl-C did not stop the search within 180 s\n{_tail(logs[1])}")
        times.append(time.time())
        text1 = logs[1].read_text(errors="replace")
        assert rc == 130 and "[tune] interrupted" in text1, _tail(logs[1])
        assert f"[tune] resuming {exp_dir}" in text1
        assert not out.exists() and c.search_model_versions("name = 'agent-dqn'") == []  # nothing selected
        at_int = _experiment_state(exp_dir)
        (third,) = set(at_int) - set(at_kill)
        assert at_int[second]["status"] == "TERMINATED" and at_int[third]["status"] != "TERMINATED", at_int
        runs_int = _runs(c, exp_id)
        assert set(runs_int) == set(at_int)
        hist_int = {i: _history(c, runs_int[i].info.run_id) for i in done1 | {second}}

        # 3. --resume again, to the end
        procs.append(_start(cmd + ["--resume"], env, logs[2]))
        try:
            rc = procs[2].wait(timeout=420)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the second --resume did not finish within 420 s\n{_tail(logs[2])}")
        times.append(time.time())
        assert rc == 0, _tail(logs[2])
        text2 = logs[2].read_text(errors="replace")
        final = _experiment_state(exp_dir)
        assert len(final) == TRIALS and all(t["status"] == "TERMINATED" and t["done"] for t in final.values()), final
        runs = _runs(c, exp_id)

        # (a) a finished trial is never trained again and keeps its result and run: its metric
        # history is exactly what it was, and Tune did not start it
        for i, before, hist, later in [(i, at_kill[i], hist_kill[i], (text1, text2)) for i in done1] + [
                (second, at_int[second], hist_int[second], (text2,))]:
            assert final[i] == before
            assert runs[i].info.run_id == before["run_id"]
            assert _history(c, runs[i].info.run_id) == hist
            assert all(f"trial_{i} started" not in t for t in later)

        # (b) an unfinished trial goes on in the same run: from its checkpoint (the iterations
        # before it were trained once), or from the start if it had none
        for i, before, run_before in [(second, at_kill[second], runs_kill[second]),
                                      (third, at_int[third], runs_int[third])]:
            assert runs[i].info.run_id == run_before.info.run_id
            assert final[i]["iteration"] > before["iteration"]
            steps = [s for s, _, _ in _history(c, runs[i].info.run_id)]
            assert set(steps) == set(range(final[i]["iteration"])), (i, steps)
            if before["iteration"] >= 1:
                assert steps.count(0) == 1, (i, steps)
        assert at_kill[second]["iteration"] >= 1

        # (c) all trials, one ended MLflow run each, the best of all registered once
        assert set(runs) == set(final)
        for i, t in final.items():
            assert runs[i].info.run_id == t["run_id"] and runs[i].info.status == "FINISHED"
            assert runs[i].data.metrics["val_sharpe"] == pytest.approx(t["val_sharpe"])
        result = json.loads(out.read_text())[0]
        best = max(final.values(), key=lambda t: t["val_sharpe"])
        assert result["trials"] == TRIALS and result["run_id"] == best["run_id"]
        versions = c.search_model_versions("name = 'agent-dqn'")
        assert [str(v.version) for v in versions] == [result["version"]] == ["1"]
        assert c.get_model_version_by_alias("agent-dqn", "challenger").run_id == best["run_id"]
        print(f"\nkilled at {times[1] - times[0]:.0f}s: {len(done1)} trial finished, one at iteration "
              f"{at_kill[second]['iteration']}; resume 1 interrupted after {times[2] - times[1]:.0f}s with the "
              f"third at iteration {at_int[third]['iteration']}; resume 2 took {times[3] - times[2]:.0f}s; "
              f"{len(runs)} MLflow runs for {len(final)} trials")
    finally:
        for p in procs:
            if p.poll() is None or _private_ray(p.pid):
                _kill_search(p)
