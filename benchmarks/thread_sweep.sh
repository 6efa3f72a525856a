#!/usr/bin/env bash
# Thread-scaling diagnostics of the numpy exact path (run on a many-core machine).
# Needs the MNIST test set (EXACTDGN_MNIST_DIR) and the VAE-trained decoders in benchmarks/models/
# (benchmarks/likelihood.py trained_vae_decoder, seed 0, 80 epochs; see benchmarks/models/README.md).
# Variants: bigger blocks (--chunk-mb) and glibc malloc without trimming / mmap of mid-size arrays.
export EXACTDGN_MNIST_DIR=${EXACTDGN_MNIST_DIR:-$PWD/../shared/data/mnist} PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nproc; python3 -c "import numpy, scipy, threadpoolctl; print(numpy.__version__, scipy.__version__); import pprint; pprint.pprint([(i['internal_api'], i['num_threads']) for i in threadpoolctl.threadpool_info()])"
B="python3 benchmarks/likelihood.py --decoder vae --models benchmarks/models --no-is --mnist-only --repeat 2"
echo "== d=1 base"; timeout 60 $B --latent 1 --threads 1,4,16 --json ${OUT:-/tmp}/d1_base.json
echo "== d=2 base"; timeout 150 $B --latent 2 --threads 1,4,16 --json ${OUT:-/tmp}/d2_base.json
echo "== d=2 big chunks"; timeout 50 $B --latent 2 --threads 16 --chunk-mb 4096 --json ${OUT:-/tmp}/d2_big.json
echo "== d=2 malloc"; MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=268435456 timeout 50 $B --latent 2 --threads 16 --json ${OUT:-/tmp}/d2_malloc.json
echo "== d=2 malloc + big"; MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=268435456 timeout 50 $B --latent 2 --threads 16,8 --chunk-mb 4096 --json ${OUT:-/tmp}/d2_malloc_big.json
echo "== d=1 malloc"; MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=268435456 timeout 30 $B --latent 1 --threads 4,16 --json ${OUT:-/tmp}/d1_malloc.json
