#!/usr/bin/env bash
# The Debian packages the test suite runs for real: Prometheus and promtool (the monitoring
# tests scrape the services with a real Prometheus and check rules with promtool), chromium
# and chromium-driver (the gateway's search page is tested in a real headless browser).
set -euo pipefail
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo"
else
    echo "the tests need Debian's ${missing[*]} package(s): run 'sudo apt-get install -y ${missing[*]}'" >&2
    exit 1
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
