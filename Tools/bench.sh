#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what is missing, build in release mode,
# run vkattn-bench on the default device (lavapipe when there is no GPU): with no arguments its
# tour (the device report, then every op family checked and timed). Arguments are passed to
# vkattn-bench, e.g. `bash Tools/bench.sh copy --bytes 1G --check`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash Tools/install-deps.sh
swift build -c release --product vkattn-bench
exec "$(swift build -c release --show-bin-path)/vkattn-bench" "$@"
