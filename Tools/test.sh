#!/usr/bin/env bash
# The tests on a fresh Debian 12 machine: install what is missing, run `swift test` with the
# Khronos validation layer on (any validation message fails a test), then build the consumer
# fixture as a separate package and run it from another directory. The MPI tests
# (Tools/test-mpi.sh) run between them.
# VKATTN_VALIDATION=sync adds synchronization validation; VKATTN_SEED replays random data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash Tools/install-deps.sh
export VKATTN_VALIDATION="${VKATTN_VALIDATION:-1}"
swift build --build-tests

bash Tools/swift-test.sh
bash Tools/test-mpi.sh
bash Tools/check-consumer.sh
