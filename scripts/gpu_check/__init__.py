"""The CUDA path on this machine's GPU, checked and measured in under 8
minutes on one H200, with nothing but the site's PyTorch and the wheelhouse.

    python3 -m scripts.gpu_check --input wheelhouse/data/tinyshakespeare/input.txt --out gpu-check.json
    make gpu-check ARGS="--out run1.json --work-dir /tmp/gpu-check --skip bench"

Steps (scripts/gpu_check/steps.py's STEPS, each with its budget and limit),
one line each, and gpu-check.json rewritten after every one:

  gpu      name, count, compute capability, driver, torch, CUDA, cuDNN, NCCL
  matmul   bf16 TFLOP/s of 8192 x 8192 products, and its fraction of the
           card's dense bf16 peak (gpt2/run/mfu.py's table)
  sdpa     which attention backend (flash, efficient, cudnn, math) runs at
           the 124M preset's shapes
  bench    `make bench ARGS="--device cuda"`'s training row: GPT-2 124M,
           bf16, torch.compile, batch 16 x 1,024: ms/iter, tokens/s, MFU
  preset   the gpt2-trackio preset (`make defconfig-gpt2-trackio`, `make
           train`) for 300 steps on a local parquet made from Tiny
           Shakespeare, 4 accumulation steps instead of 40: the loss goes
           down, its points are in Trackio's database; tok/s, MFU, peak
           memory and compile time at this recipe
  resume   the same run killed with SIGKILL on its step-100 checkpoint line,
           then --resume: it must say it resumed at 100 and repeat the
           preset's losses after it (max difference, identical or not)
  ddp      with 2 or more GPUs: the preset under torchrun, one process per
           GPU (at most 8), 50 steps, and its scaling

First the arguments, then the packages (one line naming `make wheelhouse`
if one is missing), then CUDA (one line and exit 1 without it).  Exit 0
when every step that ran passed.  docs/benchmarks.md says where the figures go.
"""

from scripts.gpu_check.check import main  # noqa: F401
from scripts.gpu_check.runs import (KILL_AT, RUN_FLAGS, TRAIN_STEPS, configure_commands, environment,  # noqa: F401
                                    shakespeare_parquet, train_command, train_flags)
