#!/usr/bin/env bash
# One prepared run for a lent GPU machine (16 cores + one GPU; its own python3 with torch).
# From the repo root there, with MNIST copied into an ignored folder of the checkout and carried
# (../shared does not travel), e.g.:
#   mkdir -p devdata/mnist && cp ../shared/data/mnist/* devdata/mnist/  (here, once; exclude it)
#   run: EXACTDGN_MNIST_DIR=$PWD/devdata/mnist bash benchmarks/device_run.sh   (carry devdata)
# One run call is at most 10 minutes: `device_run.sh gpu` (tests + gpu.py + one EM iteration
# and one L-BFGS step on [2,32,32,784], at most 9.3 min by its timeouts) and
# `device_run.sh threads` (~5 min) fit one call each; `all` (default) needs both.
# Output: $OUT/tests.log, $OUT/gpu.json, $OUT/gpu_em.json, $OUT/d1.json ... (thread sweep),
# all printed as well.
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
part=${1:-all}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
python3 -c "import torch, numpy, scipy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'scipy', scipy.__version__, 'cuda', torch.cuda.is_available())"
if [ "$part" != threads ]; then
echo "== torch backend tests on CUDA"
timeout 170 python3 -m pytest -q -p no:cacheprovider tests/inference/test_torch_backend.py tests/em/test_torch_steps.py -k cuda 2>&1 | tail -15 | tee "$OUT/tests.log"
echo "== GPU benchmark"
timeout 200 python3 benchmarks/gpu.py --device cuda --models benchmarks/models --json "$OUT/gpu.json"
echo "== one EM iteration and one L-BFGS step, MNIST t10k [2,32,32,784]: CUDA vs the numpy path"
timeout 190 python3 benchmarks/gpu.py --device cuda --models benchmarks/models --latent 2 --em-only --json "$OUT/gpu_em.json"
fi
[ "$part" = gpu ] && exit 0
echo "== thread scaling of the numpy path"
timeout 330 bash benchmarks/thread_sweep.sh
