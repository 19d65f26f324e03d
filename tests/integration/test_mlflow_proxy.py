"""Workers reach the head's MLflow (bound to 127.0.0.1) only through cluster/mlflow_proxy.py with
the token derived from the Ray cluster token: a real `mlflow server`, the real MLflow client."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from cluster.mlflow_proxy import derive_token, main, make_server

pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    up = _port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts", "--host", "127.0.0.1",
         "--port", str(up), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{up}/health", timeout=2).ok:
                break
        except requests.RequestException:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("mlflow server did not start")
    token = derive_token("the-ray-cluster-token")
    proxy = make_server(("127.0.0.1", 0), ("127.0.0.1", up), token)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{proxy.server_address[1]}", token
    proxy.shutdown()
    os.killpg(server.pid, 9)


def test_without_the_token_nothing_reaches_mlflow(proxied):
    url, token = proxied
    r = requests.get(f"{url}/api/2.0/mlflow/experiments/search?max_results=5", timeout=10)
    assert r.status_code == 401 and "MLFLOW_TRACKING_TOKEN" in r.text
    r = requests.get(f"{url}/api/2.0/mlflow/experiments/search?max_results=5", timeout=10,
                     headers={"Authorization": f"Bearer {token[:-1]}x"})
    assert r.status_code == 401


def test_the_mlflow_client_logs_and_reads_artifacts_through_the_proxy(proxied, tmp_path, monkeypatch):
    url, token = proxied
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    code = f"""
import mlflow, pathlib, sys
mlflow.set_tracking_uri({url!r})
mlflow.set_experiment("proxied")
blob = pathlib.Path({str(tmp_path)!r}) / "model.bin"
blob.write_bytes(bytes(range(256)) * 8192)          # 2 MB: streamed both ways
with mlflow.start_run() as run:
    mlflow.log_metric("sharpe", 1.25)
    mlflow.log_artifact(str(blob))
got = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="model.bin",
                                          dst_path={str(tmp_path / "back")!r})
assert pathlib.Path(got).read_bytes() == blob.read_bytes()
assert mlflow.get_run(run.info.run_id).data.metrics["sharpe"] == 1.25
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_token_comes_from_the_ray_token_and_listening_everywhere_is_refused(tmp_path, monkeypatch, capsys):
    ray_token = tmp_path / "auth_token"
    ray_token.write_text("the-ray-cluster-token\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(ray_token))
    assert main(["token"]) == 0 and capsys.readouterr().out.strip() == derive_token("the-ray-cluster-token")
    assert main(["serve", "--listen", "0.0.0.0:5001"]) == 2
    assert "not every interface" in capsys.readouterr().err
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    assert main(["token"]) == 2 and "no Ray auth token" in capsys.readouterr().err
