#!/usr/bin/env bash
# GPU checks that cannot run on the CPU machines (no CUDA, no torchvision, no vLLM there).
# Run from the repository root on a CUDA machine with a working torchvision and, optionally, vLLM:
#   bash scripts/gpu_check.sh [OUT_DIR]
# It (1) runs the HF-processor parity tests that are skipped without torchvision, (2) puts 2 videos
# through both generators (full-random models: HF pixels vs ours, prompt ids, first 16 generated ids,
# captured means, seconds per video of each) and caches the same episodes with both through `tjepa
# cache`, (4) reports videos/s per GPU with the decode pool off and on, (5) compares NVDEC frames with
# PyAV's, and (3) runs the GPU benchmarks (python -m benchmarks --only gpu).
set -euo pipefail
OUT=${1:-gpu_check_out}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python -c "import torch; assert torch.cuda.is_available(), 'needs a CUDA GPU'; print(torch.cuda.get_device_name(0))"

# ---- vLLM generator + HF processor parity (issue 17) -------------------------------------------
echo "== 1. HF processor parity (needs torchvision; skipped only where it is missing) =="
python -c "import torchvision, transformers; print('torchvision', torchvision.__version__, 'transformers', transformers.__version__)"
python -m pytest -q tests/test_preprocess.py -k "parity" -rs | tee "$OUT/parity.log"

echo "== 2. transformers vs vLLM generator on full-random models =="
tjepa synth --out "$OUT/data" --episodes 8 --tasks 4 --width 256 --height 256 --no-preview
[ -f "$OUT/models/tjepa-models.json" ] || tjepa build-models --out "$OUT/models" --preset full-random
if python -c "import vllm; print('vllm', vllm.__version__)"; then
  # 2 videos through both generators: HF pixels vs ours, prompt ids, first 16 ids, captured means,
  # seconds per video of each (exit 1 on an id mismatch).
  python scripts/compare_generators.py --data "$OUT/data" --models-dir "$OUT/models" --preset full-random \
    --videos 2 --out "$OUT" | tee "$OUT/compare_generators.log"
  # The same through `tjepa cache` end to end (first-batch pixel check, prompt-id guard, stores compared).
  tjepa cache --videos "$OUT/data" --out "$OUT/hf.zarr" --models full-random --models-dir "$OUT/models" \
    --device cuda --batch-size 4 | tee "$OUT/cache_hf.log"
  tjepa cache --videos "$OUT/data" --out "$OUT/vllm.zarr" --models full-random --models-dir "$OUT/models" \
    --device cuda --batch-size 4 --generator vllm | tee "$OUT/cache_vllm.log"
  python - "$OUT" <<'PY'
import sys, numpy as np
from tjepa.cache_schema.reader import StoreReader
out = sys.argv[1]
a, b = StoreReader(f"{out}/hf.zarr"), StoreReader(f"{out}/vllm.zarr")
ids_a, ids_b = a.read("think_ids"), b.read("think_ids")
same = (ids_a == ids_b).all(axis=1)
print(f"greedy ids identical for {same.sum()}/{len(same)} videos")
for field in ("prompt_mean", "think_mean"):
    d = np.abs(a.read(field) - b.read(field)).max(axis=(1, 2))
    print(f"{field}: max abs diff per video (same ids -> same states expected): {d[same].max() if same.any() else 'n/a'}")
PY
  if [ "$(python -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
    # non-daemonic dask workers, one engine per GPU
    tjepa cache --videos "$OUT/data" --out "$OUT/vllm2.zarr" --models full-random --models-dir "$OUT/models" \
      --batch-size 4 --generator vllm --workers 2 | tee "$OUT/cache_vllm_workers2.log"
  fi
else
  echo "vLLM not installed: pip install -e '.[vllm]' in a GPU environment to check --generator vllm"
fi
# ---- end of the vLLM section -------------------------------------------------------------------

# ---- decode pool and NVDEC (issue 15) -----------------------------------------------------------
echo "== 4. videos/s per GPU at full-random sizes: decode pool off / on (1080p H.264, EgoDex format) =="
[ -d "$OUT/data1080" ] || tjepa synth --out "$OUT/data1080" --episodes 32 --tasks 4 --width 1920 --height 1080 \
  --min-frames 240 --max-frames 300 --fps 30 --no-preview
[ -f "$OUT/models/tjepa-models.json" ] || tjepa build-models --out "$OUT/models" --preset full-random
NGPU=$(python -c 'import torch; print(torch.cuda.device_count())')
WORKERS=$([ "$NGPU" -ge 2 ] && echo "$NGPU" || echo 0)
for DW in 0 auto; do
  rm -rf "$OUT/pool_$DW.zarr" "$OUT/pool_warm_$DW.zarr"
  # a warm-up job first (model load, decode processes), then the timed job on all episodes
  tjepa cache --videos "$OUT/data1080" --out "$OUT/pool_warm_$DW.zarr" --models full-random \
    --models-dir "$OUT/models" --batch-size 8 --workers "$WORKERS" --decode-workers "$DW" --limit 8 --json > /dev/null
  tjepa cache --videos "$OUT/data1080" --out "$OUT/pool_$DW.zarr" --models full-random --models-dir "$OUT/models" \
    --batch-size 8 --workers "$WORKERS" --decode-workers "$DW" --json > "$OUT/pool_$DW.json"
  python scripts/stage_one_rate.py "$OUT/pool_$DW.json" "--decode-workers $DW" "$NGPU"
done | tee "$OUT/decode_pool.log"
python -c "import sys; sys.path.insert(0, 'tests'); from cache_helpers import assert_same_features as same; \
same('$OUT/pool_0.zarr', '$OUT/pool_auto.zarr'); print('decode pool on/off: identical feature arrays')"

echo "== 5. NVDEC (torchcodec) frames vs PyAV frames =="
if python -c "import torchcodec" 2>/dev/null; then
  python scripts/nvdec_parity.py "$OUT/data1080" | tee "$OUT/nvdec_parity.log"
else
  echo "torchcodec not installed: pip install torchcodec (a CUDA build matching torch) to check --decoder nvdec"
fi
# ---- end of the decode pool and NVDEC section ----------------------------------------------------

echo "== 3. GPU benchmarks =="
python -m benchmarks --only gpu --out "$OUT/BENCHMARKS-gpu.md"
