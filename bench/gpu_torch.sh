#!/usr/bin/env bash
# gpu_torch.sh: the PyTorch peer (bench/torch_fine.py) on a CUDA GPU, for the GPU benchmark of
# issue 7. The bcv preset at batch 2 (64x128x128 crop, 14 classes): training iterations in fp32
# (TF32 off, then on) and under bf16 autocast (cuDNN autotuning off, then on as nnU-Net trains),
# 3 warm-up + 5 timed; inference batches likewise (fp32, TF32, bf16), 3 + 10.
# One line per run on stdout, torch_fine.py's train-bench / infer-bench line: key=value fields,
# the run told apart by amp=; s_per_it (train) or s_per_batch (infer) is the mean over the timed
# iterations, patches_per_s = batch / that, gpu_peak_alloc_mb the peak of
# torch.cuda.max_memory_allocated over the timed iterations. PyTorch's own messages go to stderr.
# About 35 s on an H200 (measured), most of it starting Python and CUDA four times.
#
#   bench/gpu_torch.sh                      bcv, batch 2
#   FINE_BENCH_QUICK=1 bench/gpu_torch.sh   the tiny preset instead (a smoke test)
#
# Environment: FINE_PYTHON (default python3, the one with CUDA PyTorch), FINE_BENCH_DEVICE
# (default cuda; cuda:N), FINE_BENCH_THREADS (host threads, default all). Needs no network and
# no build. Exit 0 when every run printed its line, 1 otherwise.
set -u
here=$(cd "$(dirname "$0")" && pwd)
py=${FINE_PYTHON:-python3}
preset=bcv
[ "${FINE_BENCH_QUICK:-0}" = 1 ] && preset=tiny
common=(--preset "$preset" --batch 2 --device "${FINE_BENCH_DEVICE:-cuda}"
        --threads "${FINE_BENCH_THREADS:-$(nproc)}")
status=0

peer() {
    if ! "$py" "$here/torch_fine.py" "$@" "${common[@]}"; then
        echo "gpu_torch.sh: torch_fine.py $* ${common[*]} failed" >&2
        status=1
    fi
}

peer train-bench --amp none --warmup 3 --iters 5
peer train-bench --amp none --tf32 --warmup 3 --iters 5
peer train-bench --amp bf16 --warmup 3 --iters 5
peer train-bench --amp bf16 --cudnn-benchmark --warmup 3 --iters 5
peer infer-bench --amp none --warmup 3 --iters 10
peer infer-bench --amp none --tf32 --warmup 3 --iters 10
peer infer-bench --amp bf16 --warmup 3 --iters 10
exit $status
