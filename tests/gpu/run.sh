#!/usr/bin/env bash
# tests/gpu/run.sh: the GPU checks of the CUDA backend in one go, under 8 minutes on an H100 or
# H200. Builds (make, where the build dependencies are installed), then:
#   1. parity    every CUDA backend function against the CPU one (tests/gpu/parity.c), at fp32
#                and at bf16
#   2. model     the tiny model on both devices: logits, loss, one SGD step, 30 steps, and
#                GPU-trained parameters on the CPU (tests/gpu/model.c), at fp32, tf32, bf16, fp16
#   3. tools     fine-train --device cuda on a patch stream (the default precision, and fp16 with
#                loss scaling), then fine-infer on cuda and cpu
#   4. bench     bench/gpu (bcv, batch 2, fp32, tf32, bf16 at each recompute level) and the
#                PyTorch peer on the same GPU
#                (bench/gpu_torch.sh: fp32, TF32, bf16 autocast), with the ratios
#   5. profile   where a bf16 training iteration and an inference forward spend their time:
#                bench/gpu's profile tables (each backend call timed to its end; after the
#                ratios, so its short runs do not enter them)
# Everything printed also goes to $OUT/gpu-report.txt (OUT defaults to build/).
#
# Environment: FINE_GPU_BIN  a folder holding prebuilt parity, model, gpu, fine-train and
#                            fine-infer (skips the build; for machines without the -dev packages)
#                            (the CUDA backend they load, libfine-cuda.so, in FINE_GPU_BIN/../lib/fine/
#                            as make install lays it out, or named by FINE_CUDA_LIB)
#              FINE_GPU_LIB  extra library folder for those binaries (LD_LIBRARY_PATH)
#              FINE_GPU_PATCHES  the patch stream of step 3 (default: made with fine-synth etc.)
#              FINE_GPU_PEAK, FINE_GPU_PEAK_TF32, FINE_GPU_PEAK_BF16  the GPU's fp32, dense TF32
#                            and dense bf16 TFLOP/s for the fraction of peak (defaults 67, 495
#                            and 989, the H100/H200 SXM datasheet)
set -u
cd "$(dirname "$0")/../.."
out=${OUT:-build}
mkdir -p "$out"
report=$out/gpu-report.txt
: >"$report"
say() { echo "$*" | tee -a "$report"; }

if [ -n "${FINE_GPU_BIN:-}" ]; then
    bin=$FINE_GPU_BIN
else
    make -j"$(nproc)" >/dev/null || { say "run.sh: make failed"; exit 1; }
    bin=$out/gpu-bin
    mkdir -p "$bin"
    for f in build/release/tests/gpu/parity build/release/tests/gpu/model build/release/bench/gpu \
             bin/fine-train bin/fine-infer bin/fine-synth bin/fine-resample bin/fine-normalize bin/fine-patch; do
        ln -sf "$PWD/$f" "$bin/"
    done
fi
# cuDNN and cuBLAS from the nvidia Python wheels where the CUDA folder lacks them
libs=${FINE_GPU_LIB:-}
for m in cudnn cublas cuda_runtime; do
    d=$(python3 -c "import nvidia.$m as x; print(list(x.__path__)[0])" 2>/dev/null) && [ -d "$d/lib" ] &&
        libs=$libs:$d/lib
done
ours() { LD_LIBRARY_PATH=${libs#:}:${LD_LIBRARY_PATH:-} "$@"; }
export libs
export -f ours

status=0
# step NAME LIMIT COMMAND...: runs with a time limit, output to the report
step() {
    local name=$1 limit=$2
    shift 2
    say "== $name"
    local t0=$(date +%s%N)
    timeout "$limit" bash -c '"$@"' _ "$@" 2>&1 | tee -a "$report"
    local rc=${PIPESTATUS[0]}
    say "== $name: exit $rc after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    [ "$rc" = 0 ] || status=1
}

say "# $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"
step parity 60 ours "$bin/parity" cuda
step "parity bf16" 60 ours "$bin/parity" --precision bf16 cuda
step model 45 ours "$bin/model" cuda tiny
step "model deep" 45 ours "$bin/model" cuda tiny-deep
step "model tf32" 45 ours "$bin/model" cuda tiny tf32
step "model bf16" 45 ours "$bin/model" cuda tiny bf16
step "model fp16" 45 ours "$bin/model" cuda tiny fp16

tmp=$(mktemp -d)
patches=${FINE_GPU_PATCHES:-}
if [ -z "$patches" ]; then
    patches=$tmp/patches.fst
    ours "$bin/fine-synth" --cases 1 --scale 0.3 --seed 5 "$tmp/data" >/dev/null 2>&1 &&
        ours "$bin/fine-resample" --spacing 6,2,2 "$tmp/data" -o "$tmp/pre.fst" &&
        ours "$bin/fine-normalize" --scheme zscore "$tmp/pre.fst" "$tmp/norm.fst" &&
        ours "$bin/fine-patch" --train --augment none --crop 32,64,64 --count 10 --seed 1 "$tmp/norm.fst" -o "$patches"
fi
tools() {
    ours "$bin/fine-train" --preset tiny --device cuda --batch 2 --epochs 2 --iters-per-epoch 2 --save-every 1 \
        -o "$tmp/run" "$patches" || return 1
    ls -l "$tmp/run"
    ours "$bin/fine-train" --preset tiny --device cuda --precision fp16 --batch 2 --epochs 2 --iters-per-epoch 5 \
        --log "$tmp/fp16.jsonl" -o "$tmp/run16" "$patches" || return 1
    cat "$tmp/fp16.jsonl"
    for d in cuda cpu; do
        local t0=$(date +%s%N)
        ours "$bin/fine-infer" --model "$tmp/run/final.fst" --device $d --batch 2 --dtype f32 "$patches" \
            "$tmp/pred_$d.fst" || return 1
        echo "fine-infer --device $d: $(( ($(date +%s%N) - t0) / 1000000 )) ms, $(stat -c %s "$tmp/pred_$d.fst") bytes"
    done
}
export bin libs tmp patches
export -f ours tools
step tools 60 tools

step "bench fine" 60 ours "$bin/gpu" cuda bcv 2 8 8 "${FINE_GPU_PEAK:-67}" fp32
step "bench fine tf32" 60 ours "$bin/gpu" cuda bcv 2 8 8 "${FINE_GPU_PEAK_TF32:-495}" tf32
for level in none gelu mlp all; do # what recomputation costs and saves, at bf16
    step "bench fine bf16 recompute $level" 60 ours "$bin/gpu" cuda bcv 2 8 8 "${FINE_GPU_PEAK_BF16:-989}" bf16 $level
done
step "bench pytorch" 100 bench/gpu_torch.sh

# ratios: each of ours (fp32, tf32) against each PyTorch run on the same GPU
awk '
/^bench\/gpu: .* preset / { prec = $NF }
/^train: / { ft[prec] = $2; for (i = 1; i <= NF; i++) if ($i == "peak") fm[prec] = $(i + 1) }
/^infer: forward/ { ff[prec] = $3; fi[prec] = $10 }
/torch_fine (train|infer)-bench/ {
    amp = ""; s = ""; pps = ""; mem = ""; tf = 0; cb = 0
    for (i = 1; i <= NF; i++) {
        split($i, kv, "=")
        if (kv[1] == "amp") amp = kv[2]
        if (kv[1] == "s_per_it") s = kv[2]
        if (kv[1] == "patches_per_s") pps = kv[2]
        if (kv[1] == "gpu_peak_alloc_mb") mem = kv[2]
        if (kv[1] == "tf32") tf = kv[2]
        if (kv[1] == "cudnn_benchmark") cb = kv[2]
    }
    name = (amp == "none" ? "fp32" : amp) (tf == 1 ? "+tf32" : "") (cb == 1 ? "+cudnn.benchmark" : "")
    if ($0 ~ /train-bench/) { ts[name] = s; tm[name] = mem } else { ip[name] = pps }
}
END {
    for (p in ft) for (a in ts)
        printf("ratio: training, fine %s %.4f s/it (peak %.2f GB) vs PyTorch %s %.4f s/it (peak %.2f GB): fine %.2fx as fast, %.2fx the memory\n",
               p, ft[p], fm[p], a, ts[a], tm[a] / 1000, ts[a] / ft[p], fm[p] / (tm[a] / 1000))
    for (p in fi) for (a in ip)
        printf("ratio: inference, fine %s %.2f patches/s to the host (forward alone %.2f) vs PyTorch %s %.2f on the device: %.2fx\n",
               p, fi[p], ff[p], a, ip[a], fi[p] / ip[a])
}' "$report" | sort | tee -a "$report"
step "profile bf16 recompute gelu" 60 ours "$bin/gpu" cuda bcv 2 2 2 "${FINE_GPU_PEAK_BF16:-989}" bf16 gelu 1
rm -rf "$tmp"
say "run.sh: $([ $status = 0 ] && echo all steps passed || echo some steps FAILED)"
exit $status
