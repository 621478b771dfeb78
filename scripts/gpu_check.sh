#!/usr/bin/env bash
# GPU host check for the TensorRT path: for every default model, build (or reuse from the cache) a
# TensorRT engine per stage, compare it with ONNX Runtime on the same batch of synthetic face crops
# (max abs error and the cascade NME of both), and measure throughput (faces/s per batch size, the
# two-stage cascade, host<->device copies included). Prints a table per model and writes JSON.
# Then runs the gpu-marked tests.
#
#   scripts/gpu_check.sh                    # fp16, batch sizes 1,8,16,32,64
#   PRECISION=int8 scripts/gpu_check.sh     # INT8 with a synthetic calibration set
#   MODELS="faceapi-ibug68" BATCHES=1,64 scripts/gpu_check.sh
#
# Needs: an NVIDIA GPU and driver, TensorRT >= 10 (python package 'tensorrt'), cuda-python, and the
# wingmark package (pip install -e '.[tensorrt]'; the synthetic check data needs numpy/Pillow only).
# Engines are cached under $WINGMARK_ENGINE_CACHE (default ~/.cache/wingmark/engines).
# Exit status: 0 all checks passed, 1 a parity check or test failed, 3 no usable GPU/TensorRT.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON_BIN:-python}
[ -x .venv/bin/python ] && PY=${PYTHON_BIN:-.venv/bin/python}
PRECISION=${PRECISION:-fp16}
BATCHES=${BATCHES:-1,8,16,32,64}
MAX_BATCH=${MAX_BATCH:-64}
MODELS=${MODELS:-"faceapi-ibug68 faceapi-aflw19"}
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L; then
  echo "gpu_check: no NVIDIA GPU visible (nvidia-smi failed); nothing to check" >&2
  exit 3
fi
if ! "$PY" -c 'from runtime.backends.tensorrt import cuda_available as c; ok, r = c(); print(r); raise SystemExit(0 if ok else 1)'; then
  echo "gpu_check: TensorRT/cuda-python not usable here (see above)" >&2
  exit 3
fi

status=0
for model in $MODELS; do
  echo "=== $model ($PRECISION) ==="
  if ! "$PY" -m tools.cli build-engine "$model" --precision "$PRECISION" --max-batch "$MAX_BATCH" \
      --bench "$BATCHES" --json "$OUT/$model-$PRECISION.json"; then
    echo "gpu_check: $model failed (see $OUT/$model-$PRECISION.json)" >&2
    status=1
  fi
done

echo "=== summary ==="
"$PY" - "$OUT" "$PRECISION" $MODELS <<'PYEOF'
import json, sys
from pathlib import Path
out, precision, models = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
summary = {}
print(f"{'model':<14} {'batch':>5} {'faces/s':>10} {'cascade ms':>11} {'max |trt-ort|':>14} {'NME ort/trt':>16}")
for m in models:
    f = out / f"{m}-{precision}.json"
    if not f.exists():
        print(f"{m:<14} (no report)"); continue
    r = json.loads(f.read_text())
    err = max((s.get("parity", {}).get("max_abs_error", float("nan")) for s in r["stages"]), default=float("nan"))
    nme = r.get("cascade_nme", {})
    nme_s = f"{nme.get('onnxruntime', float('nan')):.4f}/{nme.get('tensorrt', float('nan')):.4f}"
    for row in r.get("throughput", []):
        print(f"{m:<14} {row['batch_size']:>5} {row['faces_per_s']:>10.1f} {row['cascade_latency_ms']:>11.2f} {err:>14.2e} {nme_s:>16}")
    summary[m] = r
(out / f"summary-{precision}.json").write_text(json.dumps(summary, indent=2) + "\n")
print(f"JSON: {out}/summary-{precision}.json")
PYEOF

echo "=== gpu-marked tests ==="
"$PY" -m pytest -q -m gpu tests/runtime tests/train/export tests/service || status=1
exit $status
