#!/usr/bin/env bash
# `swift test --skip-build ARGS...` (the tests must be built), in parallel unless the validation
# layer in use is one that crashes when tests run side by side.
#
# Layers before 1.3.296 (Debian 12 ships 1.3.239) keep their per-instance and per-device data in
# one unlocked map: a thread creating or destroying an instance or device while another thread
# calls into a different one can read the map mid-rehash and jump through a freed pointer
# (KhronosGroup/Vulkan-ValidationLayers#4391; about one full run in five crashed here, in
# vkCreateComputePipelines beside another test's vkCreateInstance). Tests each make their own
# devices, so under such a layer they run one at a time; within a test, ranks and tasks stay
# concurrent (a DeviceGroup makes its devices before using them).
set -euo pipefail
cd "$(dirname "$0")/.."

# The validation layer's version: the first manifest on VK_LAYER_PATH, else the system one.
layer_version() {
  local dir manifest
  for dir in ${VK_LAYER_PATH:+${VK_LAYER_PATH//:/ }} /usr/share/vulkan/explicit_layer.d; do
    manifest="$dir/VkLayer_khronos_validation.json"
    if [ -f "$manifest" ]; then
      sed -n 's/.*"api_version": *"\([0-9.]*\)".*/\1/p' "$manifest" | head -n 1
      return
    fi
  done
}

version="$(layer_version)"
parallel=()
case "$(tr '[:upper:]' '[:lower:]' <<<"${VKATTN_VALIDATION:-}")" in ""|0|off|false) version="" ;; esac
if [ -n "$version" ] && [ "$(printf '%s\n' "$version" 1.3.296 | sort -V | head -n 1)" != 1.3.296 ]; then
  echo "swift-test.sh: validation layer $version races on concurrent instance and device creation (VVL #4391): tests run one at a time"
  parallel=(--no-parallel)
fi
exec swift test --skip-build "${parallel[@]}" "$@"
