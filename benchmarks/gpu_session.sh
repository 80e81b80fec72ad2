#!/bin/bash
# The one GPU session for issue 18 item 5, run from the repository root on the device machine
# (one H200; python3 there has torch, transformers and peft but not diffusers or pydantic, which
# travel as wheels in .whl/, carried):
#
#     bash benchmarks/gpu_session.sh
#
# 1. benchmarks/nccl_check.py: an audit of the tiny SD fixture through DistributedRunner on a
#    one-rank NCCL group (NCCL refuses two ranks on one GPU) against the single-process audit.
# 2. benchmarks/bench_latent_gpu.py: an SD 1.5-sized random pipeline; the NAA audit's speed against
#    the raw UNet forward ceiling in float32 and bfloat16 (goals 0.95 and 0.90).
# 3. benchmarks/bench_real_size.py: SD 1.5 (512 px) and SDXL (1024 px)-shaped random pipelines, a sima
#    audit at 64 per side, batch 4: seconds per phase, peak RSS, time per image per query against the
#    bare UNet forward (issue 25). NAA_REAL_SIZE_SHAPES picks the shapes (default "sd15 sdxl").
# 4. benchmarks/bench_flow_size.py (issue 26 item 5): a Flux.1-dev-sized random pipeline (12B transformer,
#    T5-XXL, CLIP-L) in bfloat16 at 512 px, a loss audit of 4 v 4 loaded in two parts (text encoders
#    released before the transformer): peak RSS and GPU memory per part, then the Flux-sized bare
#    transformer forward ceiling against the attack on the same rows (ratio, 2 rounds).
#    NAA_FLOW_SIZE_FAMILIES picks the families (default "flux"; "sd3 flux" adds SD3-medium).
# NAA_GPU_SESSION_STEPS picks the steps (default "nccl latent real flow").
# A CPU check of step 4: NAA_GPU_SESSION_STEPS=flow NAA_GPU_SESSION_DEVICE=cpu
#   NAA_FLOW_SIZE_ARGS="--scale tiny --image 32 --dtype float32 --rounds 1" bash benchmarks/gpu_session.sh
# Expected well under 10 minutes in all; each step has its own timeout. The log goes to $OUT/gpu.log.
set -o pipefail
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-/tmp/naa-guard-gpu}
mkdir -p "$OUT"
# Where diffusers and pydantic are installed already (a CPU check here), the wheels are not needed.
if python3 -c "import diffusers, pydantic" 2>/dev/null; then
  export PYTHONPATH=$PWD
else
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
DEVICE=${NAA_GPU_SESSION_DEVICE:-cuda}  # a CPU check: NAA_GPU_SESSION_DEVICE=cpu NAA_GPU_SESSION_ARGS="--tiny --n 20 --batch 16 --rounds 1"
BENCH_ARGS=${NAA_GPU_SESSION_ARGS:---n 64 --batch 32 --rounds 2 --budget-s 200}
STEPS=" ${NAA_GPU_SESSION_STEPS:-nccl latent real flow} "
FLOW_ARGS=${NAA_FLOW_SIZE_ARGS:---dtype bfloat16 --image 512 --n 4 --batch 4 --rounds 2}
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  python3 -c "import torch, diffusers, transformers, pydantic; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'pydantic', pydantic.__version__)"
  if [[ $STEPS == *" nccl "* ]]; then
    echo "== nccl_check"
    timeout 150 python3 benchmarks/nccl_check.py --device "$DEVICE"; echo "nccl_check exit $?"
  fi
  if [[ $STEPS == *" latent "* ]]; then
    echo "== bench_latent_gpu"
    timeout 330 python3 benchmarks/bench_latent_gpu.py --device "$DEVICE" $BENCH_ARGS; echo "bench_latent_gpu exit $?"
  fi
  if [[ $STEPS == *" real "* ]]; then
    for shape in ${NAA_REAL_SIZE_SHAPES:-sd15 sdxl}; do  # a CPU check: NAA_REAL_SIZE_SHAPES=tiny
      echo "== bench_real_size $shape"
      timeout 240 python3 benchmarks/bench_real_size.py --device "$DEVICE" --shape "$shape" --n 64 --batch 4 --attacks sima; echo "bench_real_size $shape exit $?"
    done
  fi
  if [[ $STEPS == *" flow "* ]]; then
    for family in ${NAA_FLOW_SIZE_FAMILIES:-flux}; do  # the pipeline is built on the GPU, saved under $OUT's disk's /tmp and removed afterwards
      echo "== bench_flow_size $family"
      timeout 540 python3 benchmarks/bench_flow_size.py --family "$family" --device "$DEVICE" --ceiling $FLOW_ARGS; echo "bench_flow_size $family exit $?"
    done
  fi
  date -u
} 2>&1 | tee "$OUT/gpu.log"
