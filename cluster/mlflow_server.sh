#!/usr/bin/env bash
# The MLflow tracking server on the cluster head: start | stop | status.
#   backend store: sqlite ($DIR/mlflow.db) · artifacts: $DIR/artifacts, served by the server itself
# Started by the head_start_ray_commands of ray-cluster.yaml / cluster/local.yaml, stopped by
# `trader down` (ray down stops only Ray). It runs in its own session, so stop takes the whole
# process group (the mlflow CLI, uvicorn and its workers) and nothing else.
# MLflow itself listens on 127.0.0.1 only (the laptop reaches it through SSH forwarding); workers
# reach it through cluster/mlflow_proxy.py on the head's private address, which forwards only
# requests carrying the token derived from the Ray cluster token (MLFLOW_TRACKING_TOKEN).
# Settings (environment): KRT_MLFLOW_DIR (~/mlflow), KRT_MLFLOW_PORT (5000), KRT_MLFLOW_WORKERS (2),
# KRT_MLFLOW_PROXY_PORT (5001), KRT_PYTHON (python3: the project's interpreter).
set -euo pipefail
DIR=${KRT_MLFLOW_DIR:-$HOME/mlflow}
PORT=${KRT_MLFLOW_PORT:-5000}
WORKERS=${KRT_MLFLOW_WORKERS:-2}
PROXY_PORT=${KRT_MLFLOW_PROXY_PORT:-5001}
PYTHON=${KRT_PYTHON:-python3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PIDFILE=$DIR/server.pid

running() { test -s "$PIDFILE" && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

stop() {
    if running; then
        pid=$(cat "$PIDFILE")
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
    echo "mlflow server stopped"
}

export IP="" HERE PYTHON PROXY_PORT PORT DIR

case "${1:-status}" in
start)
    mkdir -p "$DIR/artifacts"
    running && stop
    IP=$(hostname -I 2>/dev/null | awk '{print $1}' || true)
    # one session, one process group: `stop` takes the proxy and the server together
    setsid sh -c 'echo $$ > "$0"; shift
        if [ -n "$IP" ]; then (cd "$HERE" && exec "$PYTHON" -m cluster.mlflow_proxy serve \
            --listen "$IP:$PROXY_PORT" --upstream "127.0.0.1:$PORT" >> "$DIR/proxy.log" 2>&1) & fi
        exec "$@"' "$PIDFILE" _ \
        mlflow server --backend-store-uri "sqlite:///$DIR/mlflow.db" \
        --artifacts-destination "$DIR/artifacts" --serve-artifacts \
        --host 127.0.0.1 --port "$PORT" --workers "$WORKERS" --allowed-hosts "localhost:$PORT,127.0.0.1:$PORT" \
        < /dev/null > "$DIR/server.log" 2>&1 &
    for _ in $(seq 100); do test -s "$PIDFILE" && break; sleep 0.1; done
    echo "mlflow server starting on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"), log $DIR/server.log)${IP:+; workers: http://$IP:$PROXY_PORT with MLFLOW_TRACKING_TOKEN}"
    ;;
stop) stop ;;
status)
    if running; then echo "mlflow server running (pid $(cat "$PIDFILE"))"; else echo "mlflow server not running"; exit 1; fi
    ;;
*) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
