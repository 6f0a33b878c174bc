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
# Debian's mosquitto, rabbitmq-server, prometheus and prometheus-alertmanager
# packages start system services listening on every interface (1883, 5672 and
# 25672 with epmd's 4369, 9090, 9093). Tests and the demo run private ones on
# free loopback ports and never rely on them, so while this script installs,
# a policy-rc.d (the Debian way, invoke-rc.d(8)) keeps those services from
# starting; one the machine already has is left as it is.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n# scripts/setup.sh of citybrain: no service starts while it installs\nexit 101\n' |
    $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 755 "$POLICY"
  trap '$SUDO rm -f "$POLICY"' EXIT
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
