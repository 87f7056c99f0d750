#!/usr/bin/env bash
# One prepared run on a GPU machine: the CUDA tests, the sweep benchmark on the full default grid
# (10 epochs, synthetic 60k/10k) and the service benchmark, every output under $OUT (flat, 7 files),
# then a summary. Wheels in .whl/ (jsonschema and its needs, absent there) are installed first.
#
#     OUT=/some/dir bash benchmarks/gpu_check.sh           # on the GPU machine
#     OUT=/tmp/check bash benchmarks/gpu_check.sh --quick  # anywhere: tiny sizes, CUDA tests skipped without a GPU
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
START=$(date +%s)

if ls .whl/*.whl >/dev/null 2>&1 && ! $PY -c "import jsonschema" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "nvidia-smi: not available"
    $PY -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'available', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
    nproc
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
DEV=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")

DATA=$(mktemp -d)/fmnist
if [ $QUICK = 1 ]; then
    N_TRAIN=3000; N_TEST=500
    SWEEP_ARGS=(--epochs 1 --seeds 1 --workers 1,2 --loop-epochs 1)
    SERVICE_ARGS=(--requests 3 --epochs 1)
else
    N_TRAIN=60000; N_TEST=10000
    SWEEP_ARGS=(--workers 1,2,3 --loop-epochs 1)
    SERVICE_ARGS=(--requests 8 --epochs 2)
fi
$PY -c "from reference.synth import write_synthetic; write_synthetic('$DATA', $N_TRAIN, $N_TEST, seed=0)" || exit 1
echo "synthetic data $N_TRAIN / $N_TEST (seed 0) written in $(( $(date +%s) - START )) s"

set -o pipefail
timeout 170 $PY -m pytest -o addopts="" -p no:cacheprovider -m cuda -rs -v tests/test_cuda.py 2>&1 | tee "$OUT/cuda_tests.txt"
TESTS_RC=$?
echo "cuda tests: exit $TESTS_RC after $(( $(date +%s) - START )) s"

timeout 170 $PY benchmarks/sweep_speed.py --device "$DEV" --data-dir "$DATA" --full-grid --skip-slice --tf32 \
    "${SWEEP_ARGS[@]}" --json "$OUT/sweep.json" 2>&1 | tee "$OUT/sweep.txt"
SWEEP_RC=$?
echo "sweep benchmark: exit $SWEEP_RC after $(( $(date +%s) - START )) s"

timeout 90 $PY benchmarks/service_gpu.py --devices "cpu,$DEV" --data-dir "$DATA" "${SERVICE_ARGS[@]}" \
    --json "$OUT/service.json" 2>&1 | tee "$OUT/service.txt"
SERVICE_RC=$?

{
    echo "== summary ($(( $(date +%s) - START )) s) =="
    head -3 "$OUT/device.txt"
    echo "cuda tests (exit $TESTS_RC): $(tail -1 "$OUT/cuda_tests.txt")"
    echo "sweep benchmark (exit $SWEEP_RC):"
    grep -E "^(device|matmul|full default|batched|fastest|per-run|  per-run|speed-up|same runs|TF32|  ex)" "$OUT/sweep.txt"
    echo "service benchmark (exit $SERVICE_RC):"
    tail -4 "$OUT/service.txt"
} | tee "$OUT/summary.txt"
[ $TESTS_RC = 0 ] && [ $SWEEP_RC = 0 ] && [ $SERVICE_RC = 0 ]
