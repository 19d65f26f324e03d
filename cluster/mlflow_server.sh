#!/usr/bin/env bash
# The MLflow tracking server on the cluster head: start | stop | status.
#   backend store: sqlite ($DIR/mlflow.db) · artifacts: $DIR/artifacts, served by the server itself
# Started by the head_start_ray_commands of ray-cluster.yaml / cluster/local.yaml, stopped by
# `trader down` (ray down stops only Ray). It runs in its own session, so stop takes the whole
# process group (the mlflow CLI, uvicorn and its workers) and nothing else.
# Settings (environment): KRT_MLFLOW_DIR (~/mlflow), KRT_MLFLOW_PORT (5000), KRT_MLFLOW_WORKERS (2).
set -euo pipefail
DIR=${KRT_MLFLOW_DIR:-$HOME/mlflow}
PORT=${KRT_MLFLOW_PORT:-5000}
WORKERS=${KRT_MLFLOW_WORKERS:-2}
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

case "${1:-status}" in
start)
    mkdir -p "$DIR/artifacts"
    running && stop
    ip=$(hostname -I 2>/dev/null | awk '{print $1}' || true)
    # workers reach it at the head's private address; the security group keeps it off the internet
    hosts="localhost:$PORT,127.0.0.1:$PORT${ip:+,$ip:$PORT}"
    setsid sh -c 'echo $$ > "$0"; exec "$@"' "$PIDFILE" \
        mlflow server --backend-store-uri "sqlite:///$DIR/mlflow.db" \
        --artifacts-destination "$DIR/artifacts" --serve-artifacts \
        --host 0.0.0.0 --port "$PORT" --workers "$WORKERS" --allowed-hosts "$hosts" \
        < /dev/null > "$DIR/server.log" 2>&1 &
    for _ in $(seq 100); do test -s "$PIDFILE" && break; sleep 0.1; done
    echo "mlflow server starting on port $PORT (pid $(cat "$PIDFILE"), log $DIR/server.log)"
    ;;
stop) stop ;;
status)
    if running; then echo "mlflow server running (pid $(cat "$PIDFILE"))"; else echo "mlflow server not running"; exit 1; fi
    ;;
*) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
