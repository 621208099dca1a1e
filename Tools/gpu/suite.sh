#!/usr/bin/env bash
# One call on an NVIDIA GPU machine: the device report, every op's standard shapes checked and
# timed by vkattn-bench, the PyTorch peers on the same shapes, and the ratio table.
# From the project root, after `bash ../shared/gpu/pack.sh` here:
#     bash .gpubin/run.sh bash Tools/gpu/suite.sh [--quick]
# Logs and JSON go to $OUT (the device tool's output folder) or /tmp/vkattn-gpu.
set -euo pipefail
out="${OUT:-/tmp/vkattn-gpu}"
mkdir -p "$out"
quick=()
[ "${1:-}" = "--quick" ] && quick=(--quick)
vkattn-bench devices | tee "$out/devices.txt"
vkattn-bench suite "${quick[@]}" --plan-json > "$out/plan.json"
vkattn-bench suite "${quick[@]}" --check --json > "$out/vkattn.json" 2> >(tee "$out/vkattn.log" >&2)
if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  python3 Tools/peers/torch_peers.py --plan "$out/plan.json" > "$out/peers.json" 2> >(tee "$out/peers.log" >&2)
  vkattn-bench compare "$out/vkattn.json" "$out/peers.json" | tee "$out/compare.txt"
else
  echo "no CUDA PyTorch here: peers skipped" | tee "$out/compare.txt"
fi
grep -c '"check":"fail"' "$out/vkattn.json" && { echo "some --check failed (see $out/vkattn.json)"; exit 1; } || true
