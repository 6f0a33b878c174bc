#!/usr/bin/env bash
# Installs the Debian packages citybrain needs to build, test and run the demo.
# fonts-wqy-microhei: a Chinese font for the browser tests and screenshots (the
# console fetches no fonts: a wall's own system provides them).
# prometheus: promtool and Prometheus 2.42 itself, which the /api/v1 tests
# (tests/integration/itest_promql.c) compare citybrain's answers with.
# Idempotent and quiet when everything is present; runs `apt-get update` only
# when something is missing. Called by `make test`, `make demo` and `make bench`;
# `scripts/setup.sh soak` (make soak) adds gnuplot for the soak's plot.
set -euo pipefail

PACKAGES=(
  build-essential pkg-config clang libclang-rt-14-dev
  libpaho-mqtt-dev libuv1-dev libsqlite3-dev sqlite3 libcjson-dev libcunit1-dev
  libcurl4-openssl-dev libh2o-dev libssl-dev zlib1g-dev
  mosquitto mosquitto-clients libxml2-utils
  librabbitmq-dev amqp-tools rabbitmq-server
  nodejs chromium fonts-wqy-microhei
  openssl procps python3 curl prometheus prometheus-alertmanager
)
[ "${1:-}" = soak ] && PACKAGES+=(gnuplot-nox)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# Some machines carry a nodejs build that bundles npm and conflicts with
# Debian's npm package: ask for npm only when the command is absent.
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian mosquitto package starts a system broker on port 1883 (and the
# prometheus package a server on 9090); tests and the demo run their own
# private ones on free loopback ports and never rely on them.
