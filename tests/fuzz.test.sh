#!/usr/bin/env bash
# A short libFuzzer run of every fuzz target (about 20 s each) in `make test`.
set -euo pipefail
cd "${CB_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}"
if ! command -v clang > /dev/null; then
  echo "fuzz: clang not installed, skipped"
  exit 0
fi
make --no-print-directory fuzz-short
