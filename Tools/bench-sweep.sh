#!/usr/bin/env bash
# Absurd values for every numeric option of every vkattn-bench subcommand, and a word outside the
# values of every enum option: each must end in one line "Error: ..." and exit status 1, before
# anything large is allocated (no crash, no hang, no silent clamp). A few values are legitimate
# for their option (listed in `accepts`); those must run to completion instead. Runs on lavapipe
# in CI (after the tests have built the bench).
#     bash Tools/bench-sweep.sh [path/to/vkattn-bench]
set -uo pipefail
cd "$(dirname "$0")/.."
bench="${1:-.build/debug/vkattn-bench}"
[ -x "$bench" ] || { echo "bench-sweep: $bench not built (swift build first)" >&2; exit 2; }
values=(-1 0 2147483648 1099511627776 4611686018427387904 9223372036854775807)

# Tiny base configurations, so that an accepted value finishes quickly.
declare -A base=(
  [copy]="--bytes 4K" [fill]="--bytes 4K"
  [attention]="--seq 8 --heads 1 --dim 32" [decode]="--cache 16 --heads 1 --dim 32"
  [spmm]="--rows 32 --n 4" [sddmm]="--rows 32 --k 4"
  [scan]="--count 64" [recurrence]="--batch 1 --length 8 --channels 4"
  [linear-attention]="--batch 1 --length 8 --heads 1 --dk 8 --dv 8"
  [delta-rule]="--seq 8 --heads 1 --dk 8 --dv 8"
  [mamba]="--batch 1 --seq 8 --channels 4 --state 4"
  [ring]="--seq 32 --heads 1 --dim 32" [ulysses]="--seq 32 --heads 2 --dim 32" [hybrid]="--ranks 4 --seq 32 --heads 2 --dim 32 --ulysses 2"
  [tree-decode]="--batch 1 --cache 32 --heads 1 --dim 32"
  [placement]="--lengths 2x9,5 --heads 1 --dim 32"
  [star-attention]="--context 32 --query 4 --heads 1 --dim 32"
  [lasp]="--seq 16 --heads 1 --dk 8 --dv 8" [lasp2]="--seq 16 --heads 1 --dk 8 --dv 8" [zeco]="--seq 16 --heads 1 --dk 8 --dv 8"
  [suite]="--quick"
)
declare -A options=(
  [copy]="--bytes --warmup --iterations" [fill]="--bytes --warmup --iterations"
  [attention]="--batch --heads --kv-heads --dim --dim-v --seq --seq-k --check-rows --warmup --iterations"
  [decode]="--batch --heads --kv-heads --dim --dim-v --queries --cache --splits --page-size"
  [spmm]="--rows --cols --n --block --density --empty-rows"
  [sddmm]="--rows --cols --k --density"
  [scan]="--count --batch --segment-length --workgroup-size --items --polls --tiles-per-group"
  [recurrence]="--batch --length --channels --chunk-length"
  [linear-attention]="--batch --length --heads --dk --dv --chunk-length"
  [delta-rule]="--batch --seq --heads --dk --dv --chunk-length --ranks"
  [mamba]="--batch --seq --channels --state --chunk-length --heads --head-dim --groups"
  [ring]="--ranks --seq --batch --heads --kv-heads --dim --ranks-per-node --window --window-right" [ulysses]="--ranks --seq --batch --heads --dim --window"
  [hybrid]="--ranks --ulysses --seq --heads --window-right"
  [tree-decode]="--ranks --batch --queries --cache --heads --kv-heads --dim --ranks-per-node"
  [placement]="--ranks --heads --kv-heads --dim --ranks-per-node --intra-node-gbps --inter-node-gbps"
  [star-attention]="--ranks --context --query --heads --kv-heads --dim --anchor"
  [lasp]="--ranks --seq --batch --heads --dk --dv --chunk-length" [lasp2]="--ranks --seq --dk"
  [zeco]="--ranks --seq --segments"
  [suite]="--iterations"
)
# option=value pairs that are legitimate (they run).
accepts=" --window=0 --window-right=0 --warmup=0 --check-rows=2147483648 --check-rows=1099511627776 --check-rows=4611686018427387904 --check-rows=9223372036854775807 --density=0 --empty-rows=0 --anchor=0 "

failures=0 runs=0
for command in "${!options[@]}"; do
  for option in ${options[$command]}; do
    for value in "${values[@]}"; do
      runs=$((runs + 1))
      # shellcheck disable=SC2086
      measure="--iterations 1 --warmup 0"
      [ "$command" = suite ] && measure=""
      # shellcheck disable=SC2086
      out=$(timeout 120 "$bench" "$command" ${base[$command]} $measure "$option=$value" 2>&1 >/dev/null)
      status=$?
      if [[ "$accepts" == *" $option=$value "* ]]; then
        [ "$status" -eq 0 ] && continue
        echo "FAIL $command $option=$value: a legitimate value failed (status $status): $(echo "$out" | head -3)"
      else
        lines=$(printf '%s' "$out" | grep -c '')
        [ "$status" -eq 1 ] && [ "$lines" -eq 1 ] && [[ "$out" == Error:* ]] && continue
        echo "FAIL $command $option=$value: status $status, $lines lines: $(echo "$out" | head -3 | cut -c1-200)"
      fi
      failures=$((failures + 1))
    done
  done
done
# Words outside an enum option's values: one line "Error: ..." and exit status 1 as well (refused
# while parsing, before any device is made).
declare -A words=(
  [attention]="--dtype" [decode]="--dtype --kv-dtype" [spmm]="--format --kernel --dtype --distribution --validation" [sddmm]="--dtype"
  [scan]="--dtype --op --path" [recurrence]="--layout --path --dtype" [linear-attention]="--gating --dtype --kernel"
  [delta-rule]="--dtype --scheme --kernel"
  [mamba]="--dtype --variant"
  [ring]="--dtype --sharding --path --backend --variant --block-sparse" [ulysses]="--sharding --block-sparse" [hybrid]="--dtype --block-sparse"
  [star-attention]="--dtype --path"
  [placement]="--dtype --path --lengths"
  [lasp]="--gating --path --backend" [lasp2]="--gating" [zeco]="--backend"
)
for command in "${!words[@]}"; do
  for option in ${words[$command]}; do
    runs=$((runs + 1))
    # shellcheck disable=SC2086
    out=$(timeout 120 "$bench" "$command" ${base[$command]} "$option=bogus" 2>&1 >/dev/null)
    status=$?
    lines=$(printf '%s' "$out" | grep -c '')
    [ "$status" -eq 1 ] && [ "$lines" -eq 1 ] && [[ "$out" == Error:* ]] && continue
    echo "FAIL $command $option=bogus: status $status, $lines lines: $(echo "$out" | head -3 | cut -c1-200)"
    failures=$((failures + 1))
  done
done

# attention --block-mask's numbers (SIZE:DENSITY, s2:LOCAL:STRIDE[:SIZE]): absurd ones are one-line
# errors as well; a local window wider than the context is legitimate (it is the whole context).
for value in 0:0.5 -1:0.5 9223372036854775807:0.5 64:2 64:-1 s2:-1:1 s2:1:0 s2:1:2 s2:1:9223372036854775807 \
             s2:1:1:0 s2:1:1:24 s2:1:1:9223372036854775807 s2:1 s2:x:1 s2:9223372036854775807:1; do
  runs=$((runs + 1))
  # shellcheck disable=SC2086
  out=$(timeout 120 "$bench" attention ${base[attention]} --iterations 1 --warmup 0 "--block-mask=$value" 2>&1 >/dev/null)
  status=$?
  if [ "$value" = s2:9223372036854775807:1 ]; then
    [ "$status" -eq 0 ] && continue
    echo "FAIL attention --block-mask=$value: a legitimate value failed (status $status): $(echo "$out" | head -3)"
  else
    lines=$(printf '%s' "$out" | grep -c '')
    [ "$status" -eq 1 ] && [ "$lines" -eq 1 ] && [[ "$out" == Error:* ]] && continue
    echo "FAIL attention --block-mask=$value: status $status, $lines lines: $(echo "$out" | head -3 | cut -c1-200)"
  fi
  failures=$((failures + 1))
done

echo "bench-sweep: $runs runs, $failures failures"
[ "$failures" -eq 0 ]
