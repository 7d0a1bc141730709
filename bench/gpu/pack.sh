#!/usr/bin/env bash
# Packs .gpu/ for a GPU session: ../shared/scripts/gpu-pack.sh for the test suite and the GPU timing command, then
# removes what the GPU steps of bench/gpu/run.sh never load, and checks that the pack and the working tree together fit
# the 64 MiB a device run carries (as packed on 2026-12-04: 58.3 MB of pack + 10.7 MB of tree = 69 MB, over it).
#   bash bench/gpu/pack.sh        (here, before the run; then carry .gpu)
# Removed: SkiaSharp's native library (11 MB; only the video-writer tests decode GIFs, and they are not GPU rows), the
# bundled models copied beside the tests (6.6 MB; README command 1's test, not a GPU row), the XML API docs.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash ../shared/scripts/gpu-pack.sh tests/UltraGen.Tests bench/UltraGen.GpuBench
rm -f .gpu/app/UltraGen.Tests/libSkiaSharp.so
rm -rf .gpu/app/UltraGen.Tests/models
find .gpu/app -name '*.xml' -delete
pack=$(du -sb .gpu | cut -f1)
tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 du -cb 2>/dev/null | awk '$2 == "total" { s += $1 } END { print s + 0 }')
limit=$((64 * 1024 * 1024))
echo "pack $((pack / 1048576)) MiB + working tree $((tree / 1048576)) MiB = $(((pack + tree) / 1048576)) MiB (limit 64 MiB)"
if [ $((pack + tree)) -gt "$limit" ]; then
  echo "over the 64 MiB a device run carries: prune more before the run" >&2
  exit 1
fi
