#!/usr/bin/env bash
# The cooperative-matrix kernels on a CPU: builds the package with Debian unstable's glslc (which
# compiles GL_KHR_cooperative_matrix) into .build-next and runs, on unstable's lavapipe (which
# offers VK_KHR_cooperative_matrix, 8x8x8) with its validation layer:
#   - the whole test suite (a second Vulkan implementation and today's validation rules for
#     every kernel, issue 13), where a skipped cooperative-matrix test is a failure
#     (VKATTN_REQUIRE_COOPMAT=1), in parallel (that layer has no VVL #4391 race, Tools/swift-test.sh);
#   - vkattn-bench --check on the issue's commands, once with the CPU variants (matrix loops
#     rolled) and once with the GPU variants (unrolled), each path required to say "coopmat".
# Tools/mesa-next.sh provisions the runtime (no system install).
set -euo pipefail
cd "$(dirname "$0")/.."
export VKATTN_VALIDATION="${VKATTN_VALIDATION:-1}"
bash Tools/mesa-next.sh provision
bash Tools/mesa-next.sh build --build-tests
run() { bash Tools/mesa-next.sh run "$@"; }
bench=.build-next/debug/vkattn-bench
run "$bench" devices

VKATTN_REQUIRE_COOPMAT=1 run .build-next/debug/VkAttnPackageTests.xctest --testing-library swift-testing

# Each command must pass --check (the bench exits 1 otherwise); with `coopmat` first, every
# result row must also report a cooperative-matrix path.
check() {
    local want=$1 out
    shift
    out=$(run "$bench" "$@" --check --warmup 0 --iterations 1)
    echo "$out"
    if [ "$want" = coopmat ] && echo "$out" | awk '/^-+ / { table = 1; next } table && NF > 0' | grep -qv "coopmat-"; then
        echo "error: a row of 'vkattn-bench $*' did not take a cooperative-matrix path" >&2
        exit 1
    fi
}
for loops in rolled unrolled; do
    export VKATTN_COOPMAT_LOOPS=$loops
    echo "--- $loops cooperative-matrix loops"
    check coopmat attention --seq 1023 --heads 4 --kv-heads 2 --dim 128 --dtype f16 --causal --backward
    check coopmat attention --seq 1023 --heads 4 --kv-heads 2 --dim 128 --dtype f16 --causal --backward --window 64
    check coopmat attention --seq 511 --heads 4 --kv-heads 2 --dim 64 --dtype f16 --causal --backward --block-mask s2:1:2:32
    check coopmat decode --dtype f16 --cache 4096
    check coopmat linear-attention --dtype f16 --length 1000
    check coopmat linear-attention --dtype f16 --length 1000 --backward
    check coopmat linear-attention --dtype f16 --batch 4 --length 250 --varlen --backward
    check coopmat mamba --variant ssd --dtype f16 --batch 3 --seq 300 --varlen --backward
    check coopmat spmm --format bsr --dtype f16 --rows 2048 --density 0.02
    check coopmat delta-rule --dtype f16 --seq 1000 --gated
    check coopmat delta-rule --dtype f16 --seq 1000 --gated --backward
    check coopmat delta-rule --dtype f16 --batch 4 --seq 250 --varlen --dk 128 --dv 64
    check coopmat delta-rule --dtype f16 --batch 4 --seq 250 --varlen --dk 128 --dv 64 --backward
done
# Issue 17's widths (rolled loops: an unrolled 576-wide kernel takes minutes to compile on a CPU).
export VKATTN_COOPMAT_LOOPS=rolled
check coopmat attention --seq 333 --heads 4 --kv-heads 2 --dim 59 --dtype f16 --causal --backward
check coopmat decode --dtype f16 --heads 8 --kv-heads 1 --dim 576 --dim-v 512 --cache 1000
check coopmat decode --dtype f16 --heads 8 --kv-heads 2 --dim 128 --cache 2000 --page-size 16
unset VKATTN_COOPMAT_LOOPS
# bf16 has no cooperative-matrix kernels on this device: the same commands pass on the scalar ones.
echo "--- bf16"
check any attention --seq 1023 --heads 4 --kv-heads 2 --dim 128 --dtype bf16 --causal --backward
check any attention --seq 1023 --heads 4 --kv-heads 2 --dim 128 --dtype bf16 --causal --backward --window 64
check any decode --dtype bf16 --cache 4096
check any linear-attention --dtype bf16 --length 1000
check any linear-attention --dtype bf16 --length 1000 --backward
check any spmm --format bsr --dtype bf16 --rows 2048 --density 0.02
check any delta-rule --dtype bf16 --seq 1000 --gated --backward
