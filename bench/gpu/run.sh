#!/usr/bin/env bash
# The GPU session's one command (device machine: nvcc, CMake, PyTorch; no .NET SDK). From the repo root:
#   on this machine first:   bash bench/gpu/pack.sh   (fills .gpu/: gpu-pack.sh, pruned to fit the 64 MiB a run carries)
#   on the device machine:   bash bench/gpu/run.sh          (carry .gpu; OUT defaults to /tmp/ultragen-gpu)
# Steps (each logged in full to $OUT/gpu-run.log; a failing step is recorded and the rest still run; ONLY= picks some):
#   versions   device + toolchain versions
#   ptx        PTX for compute_80/90 into build/ptx
#   tests      the cuda and ilgpu rows of the .NET tests (GPU_FILTER):  bash .gpu/run.sh dotnet .gpu/app/UltraGen.Tests/UltraGen.Tests.dll
#   peer       peer timings: PyTorch SDPA flash (bench/gpu/sdpa_peer.py) → $OUT/sdpa_peer.csv, and the 1080P layers in
#              plain PyTorch (bench/gpu/layer_peer.py) → $OUT/layer_peer.csv
#   bench      UltraGen timings (bench/UltraGen.GpuBench, CUDA events) → $OUT/ultragen.csv, same columns
#   memcheck, racecheck   compute-sanitizer over the cuda attention rows (ATTN_FILTER)
#   resources  the ptxas resource report (registers, smem, spills) for sm_80 and sm_90
# and prints one short table last.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ultragen-gpu}
mkdir -p "$OUT"
LOG="$OUT/gpu-run.log"
: >"$LOG"
TESTS_DLL=.gpu/app/UltraGen.Tests/UltraGen.Tests.dll
BENCH_DLL=.gpu/app/UltraGen.GpuBench/UltraGen.GpuBench.dll
# NUnit on Microsoft.Testing.Platform accepts the VSTest filter syntax through --filter. The GPU session runs what CI
# cannot: every cuda row (op harness, DiT, host layer) and the ilgpu rows (ILGPU on a real GPU); the cpu/reference rows
# are CI's.
GPU_FILTER=${GPU_FILTER:-"Name~/cuda/|(Name~Dit_&Name~cuda)|FullyQualifiedName~UltraGen.Tests.Cuda|Name~/ilgpu/|(Name~Dit_&Name~ilgpu)"}
ATTN_FILTER=${ATTN_FILTER:-"(Name~window_attention/|Name~window_attention_m128/|Name~cross_attention/)&Name~/cuda/"}
# PREVIOUS=<folder>: CSVs of an earlier call (sdpa_peer.csv, layer_peer.csv, ultragen.csv) the summary uses where this
# call wrote none.
# ONLY=<step,step,…> runs a subset (device time is scarce: a session has about 15 minutes, 10 per command), e.g.
#   ONLY=versions,ptx,tests,peer,bench bash bench/gpu/run.sh      then      ONLY=ptx,memcheck,racecheck,resources …
# Steps in order: versions ptx tests peer bench memcheck racecheck resources. STEP_TIMEOUT (s, default 420) bounds each.
ONLY=${ONLY:-versions,ptx,tests,peer,bench,memcheck,racecheck,resources}
STEP_TIMEOUT=${STEP_TIMEOUT:-420}
declare -a STEPS=()

wanted() { [[ ",$ONLY," == *",$1,"* ]]; }

step() {  # step <name> <command…>: runs it (bounded by STEP_TIMEOUT) with output to the log, records ok/FAILED(rc)
  local name=$1; shift
  printf '\n===== %s: %s\n' "$name" "$*" >>"$LOG"
  local t0=$SECONDS
  timeout "$STEP_TIMEOUT" "$@" >>"$LOG" 2>&1
  local rc=$?
  local verdict; verdict=$([ $rc -eq 0 ] && echo ok || { [ $rc -eq 124 ] && echo "TIMEOUT" || echo "FAILED($rc)"; })
  STEPS+=("$(printf '%-26s %-10s %5ds' "$name" "$verdict" $((SECONDS - t0)))")
  return $rc
}
skip() { STEPS+=("$(printf '%-26s %-10s %s' "$1" skipped "$2")"); }
have_pack() { [ -f .gpu/run.sh ] && [ -f "$1" ]; }

wanted versions && step versions bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -n 2; cmake --version | head -n 1; python3 -c "import torch; print(\"torch\", torch.__version__, torch.version.cuda)"'
wanted ptx && step ptx bash -c 'cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j 16 && ls -l build/ptx'
export ULTRAGEN_PTX_DIR="$PWD/build/ptx"
export ULTRAGEN_REQUIRE_CUDA=1  # a cuda backend that fails to come up is a test failure here, not 700 skips

if wanted tests; then
  if have_pack "$TESTS_DLL"; then step cuda-tests bash .gpu/run.sh dotnet "$TESTS_DLL" --filter "$GPU_FILTER"
  else skip cuda-tests "no .gpu pack (bash bench/gpu/pack.sh)"; fi
fi

wanted peer && step sdpa-peer python3 bench/gpu/sdpa_peer.py --csv "$OUT/sdpa_peer.csv"
# The 1080P layers in plain PyTorch (bf16, SDPA flash); its float64 check mode is held to the ops' references in CI.
wanted peer && step layer-peer python3 bench/gpu/layer_peer.py --csv "$OUT/layer_peer.csv"

# The .NET side of the table: the cuda backend's window_attention (bf16, fwd and bwd) on sdpa_peer.py's shapes and row
# names, and the 1080P self-attention layer (UltraGen vs full), timed with CUDA events (bench/UltraGen.GpuBench).
if wanted bench; then
  if have_pack "$BENCH_DLL"; then step ultragen-bench bash .gpu/run.sh dotnet "$BENCH_DLL" --csv "$OUT/ultragen.csv"
  else skip ultragen-bench "no .gpu pack with UltraGen.GpuBench (bash bench/gpu/pack.sh)"; fi
fi

for tool in memcheck racecheck; do
  wanted $tool || continue
  if ! have_pack "$TESTS_DLL"; then skip $tool-attention "no .gpu pack"
  elif ! command -v compute-sanitizer >/dev/null 2>&1; then skip $tool-attention "no compute-sanitizer"
  else step $tool-attention bash .gpu/run.sh compute-sanitizer --tool $tool --target-processes all --error-exitcode 1 \
         dotnet "$TESTS_DLL" --filter "$ATTN_FILTER"; fi
done

if wanted resources; then
  step ptx-resources-sm80 cmake --build build --target ptx-resources
  step ptx-resources-sm90 bash -c 'for f in kernels/*.cu kernels/attention/*.cu; do nvcc -cubin -std=c++17 -O3 -arch=sm_90 --resource-usage -I kernels -o /dev/null "$f"; done'
fi

# ---- summary: steps, then the timing table (SDPA beside UltraGen where both exist) -----------------------------------
# A CSV this call did not write is taken from $PREVIOUS (a folder of an earlier call's results, carried in the working
# tree), so a session split over two calls still gets one table.
csv_of() { if [ -f "$OUT/$1" ] || [ -z "${PREVIOUS:-}" ]; then echo "$OUT/$1"; else echo "$PREVIOUS/$1"; fi; }
python3 - "$(csv_of sdpa_peer.csv)" "$(csv_of layer_peer.csv)" "$(csv_of ultragen.csv)" >"$OUT/summary.txt" 2>&1 <<'PY'
import csv, os, sys
def load(p):
    return {(r["layer"], r["shape"]): r for r in csv.DictReader(open(p))} if os.path.exists(p) else {}
peer, ours = {**load(sys.argv[1]), **load(sys.argv[2])}, load(sys.argv[3])
print(f"{'layer':34s} {'shape':26s} {'peer TF/s':>9s} {'peer ms':>9s} {'ug TF/s':>8s} {'ug ms':>8s} {'ug/peer':>7s}")
# Our variants of a peer row, printed right after it and compared with it: X.fwd_m128 (the 128-query forward kernel)
# with X.fwd; the layers' X_f32.fwd and X_bf16attn.fwd (attention on f32 units or bf16 tensor cores) with X.fwd.
def peer_name(layer):
    for suffix, base in (("_m128", ""), ("_f32.fwd", ".fwd"), ("_bf16attn.fwd", ".fwd")):
        if layer.endswith(suffix): return layer[: -len(suffix)] + base
    return layer
order = []
for key in peer:
    order.append(key)
    order += [k for k in ours if k != key and (peer_name(k[0]), k[1]) == key]
order += [k for k in ours if k not in order]
for key in order:
    p, o = peer.get(key) or peer.get((peer_name(key[0]), key[1])), ours.get(key)
    ratio = f"{float(p['ms']) / float(o['ms']):.2f}" if p and o else "-"
    f = lambda r, c: r[c] if r else "-"
    print(f"{key[0]:34s} {key[1]:26s} {f(p,'tflops'):>9s} {f(p,'ms'):>9s} {f(o,'tflops'):>8s} {f(o,'ms'):>8s} {ratio:>7s}")
PY
{
  printf '\n===== steps\n'; printf '%s\n' "${STEPS[@]}"
  printf '\n===== timings (ug/peer = PyTorch time / UltraGen time: > 1 means UltraGen is faster)\n'; cat "$OUT/summary.txt"
} | tee -a "$LOG"
echo "full log: $LOG"
! printf '%s\n' "${STEPS[@]}" | grep -qE "FAILED|TIMEOUT"
