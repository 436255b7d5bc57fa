#!/usr/bin/env bash
# The GPU paths, checked on a CUDA machine (CI has no GPU, so none of this runs there):
#   1. the whole test suite with CUDA visible (tests that say --device auto then train on the GPU);
#   2. tests/train/test_distributed.py on the GPU: 2 processes against 1 with the same global batch, resume with
#      another process count, a killed peer. NCCL refuses two ranks on one GPU, so on a 1-GPU machine the
#      processes share it through gloo (CXRGAN_DIST_BACKEND=gloo); with 2+ GPUs it runs on NCCL;
#   3. on a 1-GPU machine, torchrun with 2 NCCL processes must stop with one message, not a CUDA error;
#   4. a run on cuda (bf16 by --precision auto) and its exact resume;
#   5. `cxrgan bench` on the GPU at batch 64 and 512, with --compile for dcgan and cgan.
# usage: bash benchmarks/gpu_check.sh WORKDIR      (PYTHON=... to choose the interpreter)
set -u
W=${1:?usage: gpu_check.sh WORKDIR}
mkdir -p "$W"
PY=${PYTHON:-python3}
step() { echo; echo "=== $* ($(date +%T))"; }

step machine
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, '| cuda', torch.version.cuda, '|', torch.cuda.device_count(), 'x',
torch.cuda.get_device_name(0), '| bf16', torch.cuda.is_bf16_supported(), '| CPU', torch.backends.cpu.get_cpu_capability(),
'|', __import__('os').cpu_count(), 'cores')"
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")

step "1. test suite, CUDA visible"
timeout 420 $PY -m pytest -q -n 8 --dist loadfile -p no:cacheprovider 2>&1 | tail -25

step "2. distributed tests on the GPU"
if [ "$NGPU" -ge 2 ]; then BACKEND=nccl; else BACKEND=gloo; fi
echo "backend $BACKEND for $NGPU GPU(s)"
CXRGAN_TEST_DEVICE=cuda CXRGAN_DIST_BACKEND=$BACKEND timeout 300 $PY -m pytest -q -p no:cacheprovider tests/train/test_distributed.py 2>&1 | tail -15

$PY -m cxrgan --quiet prepare phantom --out "$W/phantom" --size 64 --count 1024 | tail -1
if [ "$NGPU" -lt 2 ]; then
  step "3. two NCCL ranks on one GPU"
  timeout 120 $PY -m torch.distributed.run --standalone --nproc_per_node=2 -m cxrgan train --model dcgan --data "$W/phantom" \
    --out "$W/nccl2" --steps 20 --device cuda --quiet 2>&1 | grep -v "^\s*$" | grep -i -E "cxrgan|error|no GPU" | head -8
fi

step "4. train on cuda (auto precision) and resume exactly"
$PY -m cxrgan --quiet train --model cgan --data "$W/phantom" --out "$W/straight" --steps 400 --device cuda --set ckpt_every=200 2>&1 | tail -3
$PY -m cxrgan --quiet train --model cgan --data "$W/phantom" --out "$W/split" --steps 200 --device cuda --set ckpt_every=200 2>&1 | tail -1
$PY -m cxrgan --quiet train --out "$W/split" --resume --steps 400 2>&1 | tail -1
$PY - "$W" <<'EOF'
import sys, torch
from pathlib import Path
from safetensors.torch import load_file
w = Path(sys.argv[1])
a, b = (load_file(str(w / r / "checkpoints" / "step-00000400" / "weights.safetensors")) for r in ("straight", "split"))
same = all(torch.equal(a[k], b[k]) for k in a)
worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
print(f"resume on cuda: weights bit-identical: {same}; largest difference {worst:.3g}")
EOF

step "5. cxrgan bench on the GPU"
timeout 300 $PY -m cxrgan bench --device cuda --iters 100 2>&1 | grep -v Warning
timeout 300 $PY -m cxrgan bench --device cuda --iters 100 --batch-size 512 --families dcgan,cgan --compile 2>&1 | grep -v Warning
