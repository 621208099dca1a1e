#!/usr/bin/env bash
# Installs what a Debian 12 machine needs to build and run VkAttn, when missing:
#   libvulkan-dev (headers, loader, pkg-config file), glslc (GLSL -> SPIR-V at build time),
#   mesa-vulkan-drivers (lavapipe, the CPU Vulkan device), vulkan-validationlayers (tests),
#   openmpi-bin and libopenmpi-dev (the VkAttnMPI module and its mpirun tests; the core VkAttn
#   product does not need them).
# The Swift toolchain (6.1 or later) must already be installed.
set -euo pipefail
packages=(libvulkan-dev glslc mesa-vulkan-drivers vulkan-validationlayers pkg-config openmpi-bin libopenmpi-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "error: swift not found; install Swift 6.1 or later (swift.org)" >&2; exit 1; }
