#!/usr/bin/env bash
# Thread-scaling diagnostics of the numpy exact path (run on a many-core machine).
# Needs the MNIST test set (EXACTDGN_MNIST_DIR) and the VAE-trained decoders in benchmarks/models/
# (benchmarks/likelihood.py trained_vae_decoder, seed 0, 80 epochs; see benchmarks/models/README.md).
# Variants: bigger blocks (--chunk-mb) and glibc malloc without trimming / mmap of mid-size arrays.
export EXACTDGN_MNIST_DIR=${EXACTDGN_MNIST_DIR:-$PWD/../shared/data/mnist} PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nproc; python3 -c "import numpy, scipy, threadpoolctl; print(numpy.__version__, scipy.__version__); import pprint; pprint.pprint([(i['internal_api'], i['num_threads']) for i in threadpoolctl.threadpool_info()])"
B="python3 benchmarks/likelihood.py --decoder vae --models benchmarks/models --no-is --mnist-only --repeat 2"
# chunk_bytes is per worker thread: 256 MiB (default) gives 625-point blocks at 16 threads
# (MNIST d = 2, R = 2,523); 16 MiB gives the 69-point blocks of the earlier per-call budget;
# 28 MiB keeps every array of a block under glibc's largest mmap threshold (32 MiB).
M="MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=268435456"
echo "== d=1"; timeout 60 $B --latent 1 --threads 1,4,8,16 --json ${OUT:-/tmp}/d1.json
echo "== d=2"; timeout 200 $B --latent 2 --threads 1,2,4,8,16 --json ${OUT:-/tmp}/d2.json
echo "== d=2 16 MiB blocks"; timeout 60 $B --latent 2 --threads 4,16 --chunk-mb 16 --json ${OUT:-/tmp}/d2_16.json
echo "== d=2 28 MiB blocks"; timeout 60 $B --latent 2 --threads 4,16 --chunk-mb 28 --json ${OUT:-/tmp}/d2_28.json
echo "== d=2 malloc"; env $M timeout 60 $B --latent 2 --threads 16 --json ${OUT:-/tmp}/d2_malloc.json
echo "== d=1 malloc"; env $M timeout 30 $B --latent 1 --threads 16 --json ${OUT:-/tmp}/d1_malloc.json
