#!/usr/bin/env bash
# The Debian packages the test suite runs for real: Prometheus and promtool (the monitoring
# tests scrape the services with a real Prometheus and check rules with promtool).
set -euo pipefail
command -v promtool >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -eq 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo"
else
    echo "the tests need Debian's prometheus package: run 'sudo apt-get install -y prometheus'" >&2
    exit 1
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq prometheus >/dev/null
