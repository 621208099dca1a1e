#!/usr/bin/env bash
# A newer Vulkan runtime for machines without a GPU: Mesa's lavapipe, the Vulkan loader, the
# Khronos validation layer and glslc from Debian unstable, unpacked into a private folder (no
# system install, no root needed). That lavapipe offers VK_KHR_cooperative_matrix on the CPU
# (8x8x8 f16) and that glslc compiles GL_KHR_cooperative_matrix, so the tensor-core kernels can
# be built and checked here.
#
#   bash Tools/mesa-next.sh provision            download and unpack (idempotent), print versions
#   bash Tools/mesa-next.sh run PROGRAM ARGS...  run a program under that runtime
#   bash Tools/mesa-next.sh glslc                print the path of a glslc wrapper (for GLSLC=)
#   bash Tools/mesa-next.sh build ARGS...        swift build with that glslc into .build-next
#   bash Tools/mesa-next.sh test ARGS...         build the tests with that glslc and run them
#                                                under that runtime (ARGS go to the test binary,
#                                                e.g. --filter Coop)
#
# The folder is $VKATTN_MESA_NEXT (default: .mesa-next in the repository, git-ignored).
# Programs built on Debian 12 (Swift ones included) run unchanged: the runner starts them with
# unstable's dynamic loader and libraries, VK_DRIVER_FILES at that lavapipe and VK_LAYER_PATH at
# that validation layer (Debian 12's layer predates cooperative matrices).
#
# Exit status 3 means the packages could not be downloaded (network or archive trouble, not a
# kernel failure); the message says which step failed.
set -euo pipefail
root_dir=$(cd "$(dirname "$0")/.." && pwd)
dir="${VKATTN_MESA_NEXT:-$root_dir/.mesa-next}"
packages=(mesa-vulkan-drivers libvulkan1 glslc vulkan-validationlayers)

provision() {
    if [ -x "$dir/run" ] && [ -x "$dir/glslc" ] && [ -f "$dir/root/usr/share/vulkan/icd.d/lvp_icd.json" ]; then
        return 0
    fi
    mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial" "$dir/root"
    cat > "$dir/apt/unstable.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    local o=(-o Dir::Etc::sourcelist="$dir/apt/unstable.sources" -o Dir::Etc::sourceparts=/nonexistent
             -o Dir::State::Lists="$dir/apt/lists" -o Dir::State::status=/dev/null
             -o Dir::Cache="$dir/apt/cache" -o Debug::NoLocking=1 -o APT::Install-Recommends=0
             -o APT::Sandbox::User=root)
    if ! apt-get "${o[@]}" -qq update >"$dir/apt.log" 2>&1; then
        echo "mesa-next: DOWNLOAD FAILED: apt-get update of Debian unstable's index (log: $dir/apt.log)" >&2
        tail -5 "$dir/apt.log" >&2
        exit 3
    fi
    if ! apt-get "${o[@]}" -qq install -y --download-only "${packages[@]}" >>"$dir/apt.log" 2>&1; then
        echo "mesa-next: DOWNLOAD FAILED: fetching ${packages[*]} from Debian unstable (log: $dir/apt.log)" >&2
        tail -5 "$dir/apt.log" >&2
        exit 3
    fi
    for deb in "$dir"/apt/cache/archives/*.deb; do dpkg -x "$deb" "$dir/root"; done
    local lib="$dir/root/usr/lib/x86_64-linux-gnu"
    [ -x "$lib/ld-linux-x86-64.so.2" ] || { echo "mesa-next: unstable's libc (ld-linux-x86-64.so.2) was not unpacked" >&2; exit 3; }
    cat > "$dir/run" <<EOF
#!/bin/sh
exec env VK_DRIVER_FILES="$dir/root/usr/share/vulkan/icd.d/lvp_icd.json" VK_ICD_FILENAMES= \\
    VK_LAYER_PATH="$dir/root/usr/share/vulkan/explicit_layer.d" \\
    "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "\$@"
EOF
    printf '#!/bin/sh\nexec "%s/run" "%s/root/usr/bin/glslc" "$@"\n' "$dir" "$dir" > "$dir/glslc"
    chmod +x "$dir/run" "$dir/glslc"
}

versions() {
    echo "mesa-next: $("$dir/glslc" --version | head -1) ($(ls "$dir"/apt/cache/archives/ | grep -o 'mesa-vulkan-drivers_[^_]*' || true))"
}

command="${1:-provision}"
shift || true
case "$command" in
provision)
    provision
    versions
    ;;
run)
    provision
    exec "$dir/run" "$@"
    ;;
glslc)
    provision
    echo "$dir/glslc"
    ;;
build)
    provision
    cd "$root_dir"
    GLSLC="$dir/glslc" exec swift build --scratch-path .build-next "$@"
    ;;
test)
    provision
    cd "$root_dir"
    GLSLC="$dir/glslc" swift build --scratch-path .build-next --build-tests
    exec "$dir/run" .build-next/debug/VkAttnPackageTests.xctest --testing-library swift-testing "$@"
    ;;
*)
    echo "usage: bash Tools/mesa-next.sh provision|run PROGRAM ARGS...|glslc|build ARGS...|test ARGS..." >&2
    exit 2
    ;;
esac
