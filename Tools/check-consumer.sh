#!/usr/bin/env bash
# Builds Examples/Consumer (a package that depends on VkAttn by path) outside this tree,
# moves its binary to yet another directory and runs it there: the SPIR-V must be inside it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
ln -s "$root" "$work/VkAttn"
cp -R "$root/Examples/Consumer" "$work/Consumer"
rm -rf "$work/Consumer/.build"
(cd "$work/Consumer" && swift build -c debug)
mkdir -p "$work/elsewhere"
cp "$(cd "$work/Consumer" && swift build -c debug --show-bin-path)/consumer" "$work/elsewhere/"
rm -rf "$work/Consumer/.build"
(cd / && "$work/elsewhere/consumer")
