"""`ray up` for real, against this machine over SSH, with cluster/local.yaml.

The test installs openssh-server and rsync (.ci/system-setup.sh) if missing, starts its own sshd
on 127.0.0.1:22 with a throw-away key and config, and then, through the `trader` commands:
`trader up` (ray up) → `trader submit` a Serve deployment job (`trader serve`) → POST /v1/decide
over HTTP → `trader submit` a job that trades on the cluster → `trader status` → `trader down`
(ray down) — and checks that nothing it started is left running.

Isolation: the sshd runs in its own PID and mount namespaces (unshare). Everything `ray up`
starts over SSH lives there, so the `ray stop` that `ray up`/`ray down` run sees only this
cluster's processes and can never kill another Ray on the host; root's home inside is a fresh
folder (the real ~/.bashrc, ~/.ray and ~/ray_bootstrap_* are untouched), with the test's
interpreter on the login PATH. Ray's ports are all picked free (no 6379/8265/8000/52365).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

from strategies.defaults import ENSEMBLE_MEMBERS

pytestmark = [pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
BIN = Path(PY).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def ensure_system_packages() -> None:
    if Path("/usr/sbin/sshd").exists() and shutil.which("rsync") and shutil.which("ssh"):
        return
    if not shutil.which("apt-get"):
        pytest.skip("openssh-server/rsync missing and apt-get is not available to install them")
    r = subprocess.run(["bash", str(ROOT / ".ci" / "system-setup.sh")], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"could not install openssh-server/rsync with apt: {r.stderr[-500:]}")


def trader(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run([PY, "-m", "cluster.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=timeout)
    print(f"$ trader {' '.join(args)}  -> {r.returncode}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}", flush=True)
    return r


@pytest.fixture()
def sshd(tmp_path_factory):
    """sshd on 127.0.0.1:22 in fresh PID + mount namespaces; yields paths and the namespace's init."""
    if os.geteuid() != 0:
        pytest.skip("needs root: sshd on port 22 (ray's auth section has no port) and namespaces")
    ensure_system_packages()
    if port_busy(22):
        pytest.skip("127.0.0.1:22 is taken by another SSH server")
    base = Path(tempfile_dir())
    home, key = base / "home", base / "id_ed25519"
    (home / ".ssh").mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / "host_key")], check=True)
    (base / "authorized_keys").write_text((base / "id_ed25519.pub").read_text())
    # the login shell of `ray up` (bash --login -i) must find this interpreter's `ray`
    (home / ".bashrc").write_text(f"export PATH={BIN}:$PATH\nexport RAY_USAGE_STATS_ENABLED=0\n")
    (home / ".profile").write_text(". ~/.bashrc\n")
    cfg = base / "sshd_config"
    cfg.write_text("\n".join([
        "Port 22", "ListenAddress 127.0.0.1", f"HostKey {base / 'host_key'}", f"PidFile {base / 'sshd.pid'}",
        f"AuthorizedKeysFile {base / 'authorized_keys'}", "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "UsePAM no", "StrictModes no", "Subsystem sftp internal-sftp", "MaxSessions 50", "MaxStartups 50",
        ""]))
    Path("/run/sshd").mkdir(exist_ok=True)
    real_home = os.path.expanduser("~")
    inner = (f"mkdir -p {home}/.pyenv && (test -d {real_home}/.pyenv && mount --bind {real_home}/.pyenv "
             f"{home}/.pyenv || true) && mount --rbind {home} {real_home} && exec /usr/sbin/sshd -D -e -f {cfg}")
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c", inner],
                            stdout=open(base / "sshd.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 20
        while not port_busy(22):
            if proc.poll() is not None or time.time() > deadline:
                pytest.skip(f"sshd did not start: {(base / 'sshd.log').read_text()[-800:]}")
            time.sleep(0.2)
        ns_init = psutil.Process(proc.pid).children()[0]  # the sshd that is PID 1 of the namespace
        yield {"base": base, "home": home, "key": key, "init": ns_init}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # --kill-child: the namespace and anything left in it die
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


def tempfile_dir() -> str:
    import tempfile
    return tempfile.mkdtemp(prefix="krt-e2e-", dir="/tmp")  # short: Ray's socket paths must fit 107 chars


def cluster_file(sshd: dict, ports: dict) -> Path:
    """cluster/local.yaml pointed at 127.0.0.1, with free ports and this machine's interpreter."""
    cfg = yaml.safe_load((ROOT / "cluster" / "local.yaml").read_text())
    cfg["cluster_name"] = f"krt-e2e-{uuid.uuid4().hex[:6]}"
    cfg["provider"] = {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    cfg["auth"] = {"ssh_user": "root", "ssh_private_key": str(sshd["key"])}
    cfg["rsync_exclude"] = cfg["rsync_exclude"] + ["test-artifacts"]
    # The shipped setup builds a venv and pip-installs the project (minutes, network). Here the
    # node is this machine, whose interpreter already has every dependency: check the synced copy
    # imports with it instead.
    cfg["setup_commands"] = ["cd ~/kis-ray-trader && python -c 'import ray, cluster.settings, serving.app'"]
    head = []
    for c in cfg["head_start_ray_commands"]:
        c = c.replace("--port=6379", f"--port={ports['gcs']} --num-cpus=2 --temp-dir={sshd['base']}/ray "
                      f"--dashboard-port={ports['dashboard']} --ray-client-server-port={ports['client']} "
                      f"--dashboard-agent-listen-port={ports['agent']}")
        c = c.replace("--metrics-export-port=8080", f"--metrics-export-port={ports['metrics']}")
        c = c.replace("KRT_MLFLOW_PORT=5000", f"KRT_MLFLOW_PORT={ports['mlflow']}")
        head.append(c)
    cfg["head_start_ray_commands"] = head
    path = sshd["base"] / "local-e2e.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def mlflow_health(port: int, log: Path, timeout: float = 240) -> bool:
    """The head's MLflow server answers /health (its workers import mlflow: slow on 2 busy cores)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read() == b"OK":
                return True
        except OSError:
            time.sleep(2)
    print(log.read_text()[-3000:] if log.exists() else f"no MLflow log at {log}")
    return False


def decide_request() -> dict:
    from market.data import load_panel
    panel = load_panel(symbols=["005930", "000660", "035420", "005380"], start="2023-06-01", end="2023-10-31")
    window = panel.tail(61)
    return {"as_of": str(window.date(len(window) - 1)), "bars": window.to_dict()}


def post(url: str, body: dict, token: str) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, json.loads(r.read())


@pytest.mark.timeout(1800)
def test_ray_up_submit_serve_decide_down(sshd):
    ports = {k: free_port() for k in ("gcs", "dashboard", "client", "agent", "metrics", "mlflow", "serve")}
    yaml_path = cluster_file(sshd, ports)
    client_home = sshd["base"] / "client-home"
    client_home.mkdir()
    name = yaml.safe_load(yaml_path.read_text())["cluster_name"]
    env = {**os.environ, "HOME": str(client_home), "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
           "KRT_CLUSTER__CONFIG": str(yaml_path),
           "KRT_CLUSTER__DASHBOARD_URL": f"http://127.0.0.1:{ports['dashboard']}",
           "KRT_CLUSTER__AUTH_TOKEN_FILE": str(client_home / ".ray" / f"{name}.auth_token"),
           "KRT_JOURNAL": str(sshd["base"] / "journal.sqlite")}
    env.pop("RAY_ADDRESS", None)
    journal = sshd["base"] / "journal.sqlite"
    up_done = False
    try:
        r = trader("up", env=env, timeout=420)
        up_done = True
        assert r.returncode == 0, "trader up (ray up) failed"
        assert (client_home / ".ray" / f"{name}.auth_token").read_text().strip() == \
            (sshd["home"] / ".ray" / "auth_token").read_text().strip(), "token copied back from the head"
        # the head runs Ray (inside the namespace)
        names = {p.name() for p in sshd["init"].children(recursive=True)}
        assert {"gcs_server", "raylet"} <= names, names

        # Serve: deployed by a job running `trader serve` on the cluster, then queried over HTTP
        token = secrets.token_urlsafe(24)   # the decision endpoint's bearer token, given to the job
        r = trader("submit", "--timeout", "300", "--env", f"KRT_SERVE__PORT={ports['serve']}",
                   "--env", f"KRT_DECIDE_TOKEN={token}", "--",
                   "python", "-m", "cluster.cli", "serve", "--address", "auto", env=env, timeout=360)
        assert r.returncode == 0 and "Serve app 'trader' is running" in r.stdout
        body = decide_request()
        status, answer = post(f"http://127.0.0.1:{ports['serve']}/v1/decide", body, token)
        assert status == 200 and answer["as_of"] == body["as_of"]
        assert set(answer["targets"]) == set(body["bars"]["symbols"])
        assert 0 <= sum(answer["targets"].values()) <= 1 + 1e-9
        assert set(ENSEMBLE_MEMBERS) <= set(answer["agents"])   # serve.agents' default: the ensemble's members

        # the head's MLflow server (started by ray up, warming up meanwhile) answers
        mlflow_url = f"http://127.0.0.1:{ports['mlflow']}"
        assert mlflow_health(ports["mlflow"], sshd["home"] / "mlflow" / "server.log")

        # a training job on the cluster, with the project as working dir, logging to the head's MLflow
        r = trader("submit", "--timeout", "900", "--env", f"MLFLOW_TRACKING_URI={mlflow_url}", "--",
                   "python", "-m", "training.tune", "--smoke", "--algo", "dqn",
                   "--storage", str(sshd["base"] / "tune"), env=env, timeout=960)
        assert r.returncode == 0, "the training job failed"
        from mlflow.tracking import MlflowClient
        client = MlflowClient(mlflow_url)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert runs, "the training job logged no run to the head's MLflow server"

        # the trading loop as a job, on the cluster's Serve app and actors
        r = trader("submit", "--timeout", "400", "--env", f"KRT_SERVE__PORT={ports['serve']}",
                   "--env", "KRT_CLUSTER__ADDRESS=auto", "--env", f"KRT_JOURNAL={journal}",
                   "--env", "KRT_TRADING__SYMBOLS=005930,000660,035420,005380", "--",
                   "python", "-m", "cluster.cli", "run", "--mode", "paper", "--days", "3", env=env, timeout=460)
        assert r.returncode == 0 and "done: 3 decisions" in r.stdout

        r = trader("status", "--address", f"127.0.0.1:{ports['gcs']}", "--json", env=env, timeout=120)
        assert r.returncode == 0
        report = json.loads(r.stdout[r.stdout.index("{"):])
        assert report["cluster"]["connected"] and report["cluster"]["resources"]["CPU"] == 2
        assert report["serve"]["trader"]["status"] == "RUNNING"
        assert any(a["class"] == "AgentHost" for a in report["actors"])
        assert len(report["journal"]["decisions"]) == 3
    finally:
        if up_done:
            r = trader("down", env=env, timeout=300)
    assert r.returncode == 0, "trader down (ray down) failed"
    # nothing this cluster started is left: the namespace's init has no descendants (Ray, MLflow,
    # job drivers, Serve replicas), and no client-side ssh master holds the throw-away key
    deadline = time.time() + 60
    left: list = []
    while time.time() < deadline:
        left = [f"{p.pid} {' '.join(p.cmdline())[:120]}" for p in sshd["init"].children(recursive=True)
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        left += [f"{p.pid} {' '.join(p.info['cmdline'] or [])[:120]}"
                 for p in psutil.process_iter(["cmdline"]) if str(sshd["key"]) in " ".join(p.info["cmdline"] or [])]
        if not left:
            break
        time.sleep(2)
    assert not left, f"processes left after trader down: {left}"
    for state in Path("/tmp/ray").glob(f"cluster-{name}*"):
        state.unlink()  # the local provider's record of this throw-away cluster
