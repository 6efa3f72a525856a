#!/usr/bin/env bash
# One prepared run for a lent GPU machine (16 cores + one GPU; its own python3 with torch).
# From the repo root there, with MNIST copied into an ignored folder of the checkout and carried
# (../shared does not travel), e.g.:
#   mkdir -p devdata/mnist && cp ../shared/data/mnist/* devdata/mnist/  (here, once; exclude it)
#   run: EXACTDGN_MNIST_DIR=$PWD/devdata/mnist bash benchmarks/device_run.sh PART  (carry devdata)
# One run call is at most 10 minutes; each part fits one call:
#   first  (~7.5 min at most by its timeouts): the CUDA tests, then the default training
#          benchmark on the 8x8 digits [2,32,32,64] with the exact fit on the GPU beside the IWAE,
#          then gpu.py's log p(x), E-step and IS on MNIST t10k [2,32,32,784];
#   em     (~3.5 min): one EM iteration and one L-BFGS step on MNIST t10k [2,32,32,784] on the
#          GPU beside the numpy path (on the 16 cores);
#   gpu    (~9.3 min): tests + gpu.py for both saved decoders + the EM iteration;
#   threads (~5 min): thread scaling of the numpy path.
# Output: $OUT/env.txt, $OUT/tests.log, $OUT/training/ (config.json, results.json),
# $OUT/gpu.json, $OUT/gpu_em.json, $OUT/d1.json ... (thread sweep), all printed as well.
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
part=${1:-gpu}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
  nproc
  python3 -c "import torch, numpy, scipy, sklearn, numba; print('torch', torch.__version__, 'numpy', numpy.__version__, 'scipy', scipy.__version__, 'sklearn', sklearn.__version__, 'numba', numba.__version__, 'cuda', torch.cuda.is_available())"
  python3 -c "import numpy; numpy.show_config()" 2>&1 | grep -i -A3 "blas" | head -12
} 2>&1 | tee "$OUT/env.txt"
tests() {
  echo "== torch backend tests on CUDA"
  timeout "$1" python3 -m pytest -q -p no:cacheprovider --no-header --tb=short -rf \
    tests/inference/test_torch_backend.py tests/em/test_torch_steps.py tests/decoder/test_torch.py \
    -k cuda >"$OUT/tests.log" 2>&1
  echo "pytest rc $?"
  tail -40 "$OUT/tests.log"
}
case "$part" in
first)
  tests 150
  echo "== default training, digits [2,32,32,64]: exact fit on the GPU beside the IWAE (CPU)"
  timeout 200 python3 benchmarks/training.py --settings digits-2-32-32-64 --device cuda \
    --out "$OUT/training"
  echo "== gpu.py: MNIST t10k [2,32,32,784], log p(x), E-step and IS"
  timeout 90 python3 benchmarks/gpu.py --device cuda --models benchmarks/models --latent 2 \
    --no-em --repeat 2 --compare 500 --json "$OUT/gpu.json"
  ;;
em)
  echo "== one EM iteration and one L-BFGS step, MNIST t10k [2,32,32,784]: CUDA vs the numpy path"
  timeout 200 python3 benchmarks/gpu.py --device cuda --models benchmarks/models --latent 2 \
    --em-only --json "$OUT/gpu_em.json"
  ;;
gpu | all)
  tests 170
  echo "== GPU benchmark"
  timeout 200 python3 benchmarks/gpu.py --device cuda --models benchmarks/models --json "$OUT/gpu.json"
  echo "== one EM iteration and one L-BFGS step, MNIST t10k [2,32,32,784]: CUDA vs the numpy path"
  timeout 190 python3 benchmarks/gpu.py --device cuda --models benchmarks/models --latent 2 \
    --em-only --json "$OUT/gpu_em.json"
  ;;
esac
if [ "$part" = threads ] || [ "$part" = all ]; then
  echo "== thread scaling of the numpy path"
  timeout 330 bash benchmarks/thread_sweep.sh
fi
