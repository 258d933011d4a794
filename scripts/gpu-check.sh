#!/usr/bin/env bash
# GPU backend check on a headless NVIDIA server (see ../shared/gpu/README.md).
#
#   scripts/gpu-check.sh prepare   # on the build machine (Debian 12): fills .gpu/
#   scripts/gpu-check.sh run       # on the GPU server, from the project root
#
# `prepare` builds the release binaries and brings along what the server
# lacks: the Vulkan loader, and a driver file naming libEGL_nvidia.so.0 (the
# server's own names libGLX_nvidia.so.0, which finds no adapter without a
# display). `run` answers everything in one go, writing under $OUT (default
# ./gpu-check-out): the adapter list, the GPU against the scalar oracle, then
# end-to-end verification throughput at the issue's shapes and the CPU/GPU
# crossover. Correctness comes first: throughput is not measured on a GPU
# that disagrees with the oracle.
#
# Dry run on a machine without a GPU (lavapipe, tiny shapes):
#   GPU_ICD=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json QUICK=1 scripts/gpu-check.sh run
set -uo pipefail

cd "$(dirname "$0")/.."
GPU_DIR=$PWD/.gpu

prepare() {
    set -e
    command -v apt-get >/dev/null && ! [ -e /usr/lib/x86_64-linux-gnu/libvulkan.so.1 ] &&
        apt-get install -y libvulkan1
    mkdir -p "$GPU_DIR"
    if [ -d .git ] || [ -f .git ]; then
        exclude=$(git rev-parse --git-path info/exclude)
        grep -qx '.gpu/' "$exclude" 2>/dev/null || echo '.gpu/' >>"$exclude"
    fi
    cp /usr/lib/x86_64-linux-gnu/libvulkan.so.1 "$GPU_DIR/"
    printf '{"file_format_version":"1.0.1","ICD":{"library_path":"libEGL_nvidia.so.0","api_version":"1.3.0"}}\n' \
        >"$GPU_DIR/nvidia_egl_icd.json"
    cargo build --release -p montana-node
    cargo build --release -p montana-backends --example gpu_throughput
    cp target/release/montana target/release/examples/gpu_throughput "$GPU_DIR/"
    ls -l "$GPU_DIR"
}

run() {
    OUT=${OUT:-$PWD/gpu-check-out}
    mkdir -p "$OUT"
    export LD_LIBRARY_PATH="$GPU_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export VK_ICD_FILENAMES="${GPU_ICD:-$GPU_DIR/nvidia_egl_icd.json}"
    local montana="$GPU_DIR/montana" tp="$GPU_DIR/gpu_throughput"
    local log="$OUT/gpu-check.log" status=0
    : >"$log"
    step() { # step NAME SECONDS CMD...: output to $OUT/NAME.out, a line in the log
        local name=$1 secs=$2
        shift 2
        local t0=$SECONDS
        timeout "$secs" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"
        local rc=$?
        echo "$name rc=$rc seconds=$((SECONDS - t0)): $*" | tee -a "$log"
        return $rc
    }
    {
        echo "date: $(date -u +%FT%TZ)"
        uname -a
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
        nproc
    } >"$OUT/host.txt"

    step backends 60 "$montana" backends --json
    step adapters 60 "$tp" adapters
    if ! step selftest 240 "$montana" selftest --backend gpu; then
        echo "selftest failed: no throughput figures" | tee -a "$log"
        return 1
    fi

    # The issue's shapes: a catch-up batch of 64 windows of K = 6,500
    # segments of 50,000 steps (D = 325,000,000), then one window alone.
    # QUICK=1 divides them for a dry run on a software adapter.
    local k=6500 l=50000 small=65536 small_l=4000 suite
    if [ "${QUICK:-0}" = 1 ]; then
        k=65 l=500 small=4096 small_l=40
    fi
    for suite in blake3 sha256; do
        # Every dispatch's size and time go to the .err file: none may pass ~100 ms.
        MONTANA_GPU_TRACE=1 step "verify-$suite-64windows" 240 "$tp" verify "$suite" $((64 * k)) "$l" 3 || status=1
        step "verify-$suite-1window" 120 "$tp" verify "$suite" "$k" "$l" 5 || status=1
        # A smaller batch: where the curve bends.
        step "verify-$suite-${small}x$small_l" 120 "$tp" verify "$suite" "$small" "$small_l" 3 || status=1
        # The smallest batch of L-step segments where the GPU beats the CPU.
        step "crossover-$suite" 240 "$tp" crossover "$suite" "$l" "$small" || status=1
    done
    cat "$OUT"/verify-*.out "$OUT"/crossover-*.out >"$OUT/results.jsonl" 2>/dev/null
    for f in "$OUT"/verify-*-64windows.err; do
        grep -o 'in [0-9.]* ms' "$f" | awk -v f="$(basename "$f" .err)" \
            '{ if ($2 > max) max = $2; n++ } END { printf "%s: %d dispatches, longest %.1f ms\n", f, n, max }'
    done | tee -a "$log"
    echo "results: $OUT/results.jsonl" | tee -a "$log"
    return $status
}

case "${1:-run}" in
prepare) prepare ;;
run) run ;;
*)
    echo "usage: $0 prepare|run" >&2
    exit 2
    ;;
esac
