#!/usr/bin/env bash
# System packages the cluster/dashboard tests need (Debian). Idempotent: installs only what is
# missing, never starts a service (the e2e test starts its own sshd on 127.0.0.1).
#   openssh-server, rsync  -> `ray up` against this machine over SSH (tests/e2e/test_cluster_ray_up.py)
#   chromium               -> headless browser test of the Streamlit dashboard and the report
#   fonts-nanum            -> a Hangul font: Korean stock names in the PNG charts (matplotlib) and
#                             in the browser screenshots (chromium)
set -euo pipefail

need=()
command -v /usr/sbin/sshd >/dev/null 2>&1 || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
ls /usr/share/fonts/truetype/nanum/NanumGothic.ttf >/dev/null 2>&1 || need+=(fonts-nanum)

if [ ${#need[@]} -eq 0 ]; then
    echo "system-setup: nothing to install"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-setup: apt-get not available; cannot install ${need[*]}" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "system-setup: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
# Ask apt for the package lists only when they are missing (a fresh container).
if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]; then
    $SUDO apt-get update -q
fi
$SUDO apt-get install -y -q --no-install-recommends "${need[@]}" || {
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
}
