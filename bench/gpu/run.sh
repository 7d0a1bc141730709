#!/usr/bin/env bash
# The GPU session's one command (device machine: nvcc, CMake, PyTorch; no .NET SDK). From the repo root:
#   on this machine first:   ../shared/scripts/gpu-pack.sh tests/UltraGen.Tests bench/UltraGen.GpuBench   (fills .gpu/)
#   on the device machine:   bash bench/gpu/run.sh          (carry .gpu; OUT defaults to /tmp/ultragen-gpu)
# Steps (each logged in full to $OUT/gpu-run.log; a failing step is recorded and the rest still run):
#   1. device + toolchain versions
#   2. PTX for compute_80/90 into build/ptx, and the ptxas resource report (registers, smem, spills) for sm_80 and sm_90
#   3. the .NET test harness on the Cuda backend:    bash .gpu/run.sh dotnet .gpu/app/UltraGen.Tests/UltraGen.Tests.dll
#   4. compute-sanitizer memcheck and racecheck over the attention tests (ATTN_FILTER)
#   5. peer timings: PyTorch SDPA flash (bench/gpu/sdpa_peer.py) → $OUT/sdpa_peer.csv
#   6. UltraGen timings (bench/UltraGen.GpuBench, CUDA events) → $OUT/ultragen.csv, same columns
# and prints one short table last.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ultragen-gpu}
mkdir -p "$OUT"
LOG="$OUT/gpu-run.log"
: >"$LOG"
TESTS_DLL=.gpu/app/UltraGen.Tests/UltraGen.Tests.dll
BENCH_DLL=.gpu/app/UltraGen.GpuBench/UltraGen.GpuBench.dll
# NUnit on Microsoft.Testing.Platform accepts the VSTest filter syntax through --filter.
ATTN_FILTER=${ATTN_FILTER:-"FullyQualifiedName~WindowAttention|FullyQualifiedName~window_attention"}
declare -a STEPS=()

step() {  # step <name> <command…>: runs it with output to the log, records ok/FAILED(rc)
  local name=$1; shift
  printf '\n===== %s: %s\n' "$name" "$*" >>"$LOG"
  local t0=$SECONDS
  "$@" >>"$LOG" 2>&1
  local rc=$?
  STEPS+=("$(printf '%-26s %-10s %5ds' "$name" "$([ $rc -eq 0 ] && echo ok || echo "FAILED($rc)")" $((SECONDS - t0)))")
  return $rc
}
skip() { STEPS+=("$(printf '%-26s %-10s %s' "$1" skipped "$2")"); }

step versions bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -n 2; cmake --version | head -n 1; python3 -c "import torch; print(\"torch\", torch.__version__, torch.version.cuda)"'

step ptx bash -c 'cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j 16 && ls -l build/ptx'
step ptx-resources-sm80 cmake --build build --target ptx-resources
step ptx-resources-sm90 bash -c 'for f in kernels/*.cu kernels/attention/*.cu; do nvcc -cubin -std=c++17 -O3 -arch=sm_90 --resource-usage -I kernels -o /dev/null "$f"; done'
export ULTRAGEN_PTX_DIR="$PWD/build/ptx"
export ULTRAGEN_REQUIRE_CUDA=1  # a cuda backend that fails to come up is a test failure here, not 700 skips

if [ -f .gpu/run.sh ] && [ -f "$TESTS_DLL" ]; then
  step dotnet-tests bash .gpu/run.sh dotnet "$TESTS_DLL"
  if command -v compute-sanitizer >/dev/null 2>&1; then
    step memcheck-attention bash .gpu/run.sh compute-sanitizer --tool memcheck --target-processes all --error-exitcode 1 \
      dotnet "$TESTS_DLL" --filter "$ATTN_FILTER"
    step racecheck-attention bash .gpu/run.sh compute-sanitizer --tool racecheck --target-processes all --error-exitcode 1 \
      dotnet "$TESTS_DLL" --filter "$ATTN_FILTER"
  else
    skip memcheck-attention "no compute-sanitizer"
    skip racecheck-attention "no compute-sanitizer"
  fi
else
  skip dotnet-tests "no .gpu pack (run ../shared/scripts/gpu-pack.sh tests/UltraGen.Tests first)"
  skip memcheck-attention "no .gpu pack"
  skip racecheck-attention "no .gpu pack"
fi

step sdpa-peer python3 bench/gpu/sdpa_peer.py --csv "$OUT/sdpa_peer.csv"

# The .NET side of the table: the cuda backend's window_attention (bf16, fwd and bwd) on sdpa_peer.py's shapes and row
# names, and the 1080P self-attention layer (UltraGen vs full), timed with CUDA events (bench/UltraGen.GpuBench).
if [ -f .gpu/run.sh ] && [ -f "$BENCH_DLL" ]; then
  step ultragen-bench bash .gpu/run.sh dotnet "$BENCH_DLL" --csv "$OUT/ultragen.csv"
else
  skip ultragen-bench "no .gpu pack with UltraGen.GpuBench (../shared/scripts/gpu-pack.sh tests/UltraGen.Tests bench/UltraGen.GpuBench)"
fi

# ---- summary: steps, then the timing table (SDPA beside UltraGen where both exist) -----------------------------------
python3 - "$OUT/sdpa_peer.csv" "$OUT/ultragen.csv" >"$OUT/summary.txt" 2>&1 <<'PY'
import csv, os, sys
def load(p):
    return {(r["layer"], r["shape"]): r for r in csv.DictReader(open(p))} if os.path.exists(p) else {}
peer, ours = load(sys.argv[1]), load(sys.argv[2])
print(f"{'layer':24s} {'shape':26s} {'sdpa TF/s':>9s} {'sdpa ms':>9s} {'ug TF/s':>8s} {'ug ms':>8s} {'ug/sdpa':>7s}")
for key in list(peer) + [k for k in ours if k not in peer]:
    p, o = peer.get(key), ours.get(key)
    ratio = f"{float(p['ms']) / float(o['ms']):.2f}" if p and o else "-"
    f = lambda r, c: r[c] if r else "-"
    print(f"{key[0]:24s} {key[1]:26s} {f(p,'tflops'):>9s} {f(p,'ms'):>9s} {f(o,'tflops'):>8s} {f(o,'ms'):>8s} {ratio:>7s}")
PY
{
  printf '\n===== steps\n'; printf '%s\n' "${STEPS[@]}"
  printf '\n===== timings (ug/sdpa = SDPA time / UltraGen time: > 1 means UltraGen is faster)\n'; cat "$OUT/summary.txt"
} | tee -a "$LOG"
echo "full log: $LOG"
! printf '%s\n' "${STEPS[@]}" | grep -q FAILED
