#!/usr/bin/env bash
# The GPU half of the benchmarks (issue 6; also the cross-Lipschitz step and the batched region attack), as run on a lent GPU machine
# through the device tool. That machine has no network and its own jax/flax/optax, so osqp travels as a
# wheel in .whl/ and robustjax runs from the checkout (PYTHONPATH). Results land in $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/robustjax-device}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/machine.txt"
nproc | tee -a "$OUT/machine.txt"
python3 -c "import jax, flax, optax, osqp; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" 2>&1 | tee -a "$OUT/machine.txt"
timeout "${PARALLEL_TIMEOUT:-400}" python3 benchmarks/bench_parallel.py --tag gpu1 ${PARALLEL_ARGS:-} > "$OUT/parallel.log" 2>&1
echo "bench_parallel rc=$?"; tail -25 "$OUT/parallel.log"
cp benchmarks/results/parallel_gpu1.json "$OUT/" 2>/dev/null
[ -n "${SKIP_CL:-}" ] || timeout "${CL_TIMEOUT:-130}" python3 benchmarks/bench_cross_lipschitz.py --skip-variance > "$OUT/cross_lipschitz.log" 2>&1
echo "bench_cross_lipschitz rc=$?"; sed -n '/^## gpu/,/^$/p' "$OUT/cross_lipschitz.log"; tail -5 "$OUT/cross_lipschitz.log"
cp benchmarks/results/cross_lipschitz_step.json "$OUT/" 2>/dev/null
# issue 16: the l2 region attack's sequential vs batched (vmapped) rounds on the GPU, beside the CPU's figures
[ -n "${SKIP_REGION:-}" ] || timeout "${REGION_TIMEOUT:-300}" python3 benchmarks/bench_region_batched.py --n 8 --regions 100 > "$OUT/region_batched.log" 2>&1
echo "bench_region_batched rc=$?"; grep -v Warn "$OUT/region_batched.log" | tail -6
cp benchmarks/results/region_batched_gpu.json benchmarks/region_batched_gpu.md "$OUT/" 2>/dev/null
# the same for the l_inf LPs (robustjax.lp's interior-point method, vmapped)
[ -n "${SKIP_REGION:-}" ] || timeout "${REGION_TIMEOUT:-300}" python3 benchmarks/bench_region_batched.py --p inf --n 4 --regions 100 > "$OUT/region_batched_linf.log" 2>&1
echo "bench_region_batched --p inf rc=$?"; grep -v Warn "$OUT/region_batched_linf.log" | tail -6
cp benchmarks/results/region_batched_gpu_linf.json benchmarks/region_batched_gpu_linf.md "$OUT/" 2>/dev/null
exit 0
