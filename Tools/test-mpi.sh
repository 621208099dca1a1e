#!/usr/bin/env bash
# The MPI backend's tests: vkattn-mpi-tests under `mpirun --oversubscribe -np N` on this host
# (N = 1, 2, 3, 4, VKATTN_MPI_RANKS overrides; and N = 3 through staging buffers), each rank a
# process with its own logical Vulkan device (collectives, every scheduler, linear attention and
# the linear recurrence across ranks against single-device kernels); then the failure runs: one rank throws (every
# rank must exit with an error naming it), one rank never joins (timeouts must end every
# rank), one rank cannot create its device. Every mpirun runs under `timeout`, so a hang
# fails the script, not the CI job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash Tools/install-deps.sh
swift build --product vkattn-mpi-tests
bin="$(swift build --show-bin-path)/vkattn-mpi-tests"
export VKATTN_VALIDATION="${VKATTN_VALIDATION:-1}"
# Containers: no cross-memory attach (ptrace) for shared-memory transfers; processes on one host.
export OMPI_MCA_btl_vader_single_copy_mechanism="${OMPI_MCA_btl_vader_single_copy_mechanism:-none}"
export OMPI_MCA_btl="${OMPI_MCA_btl:-self,vader,tcp}"
launcher=(mpirun --oversubscribe)
[ "$(id -u)" -ne 0 ] || launcher+=(--allow-run-as-root)

for n in ${VKATTN_MPI_RANKS:-1 2 3 4}; do
  echo "== ${launcher[*]} -np $n vkattn-mpi-tests"
  timeout "${VKATTN_MPI_TEST_LIMIT:-900}" "${launcher[@]}" -np "$n" "$bin"
done
echo "== ${launcher[*]} -np 3 vkattn-mpi-tests --staged"
timeout "${VKATTN_MPI_TEST_LIMIT:-900}" "${launcher[@]}" -np 3 "$bin" --staged

# Runs a failure case; it must fail (not time out) and print `pattern` on `count` lines.
expect_failure() {
  local what="$1" pattern="$2" count="$3"
  shift 3
  echo "== failure: $what"
  set +e
  out="$(timeout 120 "$@" 2>&1)"
  rc=$?
  set -e
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ]; then
    echo "$out"
    echo "error: $what: exit status $rc (expected a failure, not success or a hang)" >&2
    exit 1
  fi
  found="$(grep -c -- "$pattern" <<<"$out" || true)"
  if [ "$found" -ne "$count" ]; then
    echo "$out"
    echo "error: $what: $found lines match '$pattern', expected $count" >&2
    exit 1
  fi
  grep -- "error:" <<<"$out" | sort
}

expect_failure "rank 1 of 3 throws" "MPI: rank 1 failed: contextParallel" 2 \
  "${launcher[@]}" -np 3 "$bin" --fail-rank 1
expect_failure "rank 1 of 2 never joins (VKATTN_MPI_TIMEOUT=3)" "did not complete within 3.0 s" 2 \
  env VKATTN_MPI_TIMEOUT=3 "${launcher[@]}" -np 2 "$bin" --stall-rank 1
expect_failure "rank 0 of 3 cannot create its device" "MPI: rank 0 failed: no Vulkan device matches" 2 \
  "${launcher[@]}" -np 1 env VKATTN_DEVICE=no-such-device "$bin" : -np 2 "$bin"
echo "MPI tests passed"
