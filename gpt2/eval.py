"""`python gpt2/eval.py --ckpt out/best.pt [--eval-tasks hellaswag,ppl]`:
the eval tasks of gpt2/eval/ on a checkpoint (gpt2/eval/cli.py says more).

The package gpt2/eval/ shadows this file as a module, so it is only ever
run as a file: it runs `python -m gpt2.eval` (gpt2/eval/__main__.py)."""

if __name__ == "__main__":
    import os
    import sys

    _options = sys.orig_argv[1 : len(sys.orig_argv) - len(sys.argv)]
    os.execv(sys.executable, [sys.executable, *_options, "-m", "gpt2.eval", *sys.argv[1:]])
