"""gpt2.train under torchrun with a fault of a real cluster injected, for
tests/test_multinode.py (run as the script torchrun starts):

  GPT2LAB_TEST_PREPARE_DELAY=S  preparing the dataset takes S seconds more
                                (FineWeb-Edu takes hours)
  GPT2LAB_TEST_RANK1_CWD=DIR    rank 1 runs in DIR, so a relative --out-dir
                                names another folder there, as on a node that
                                does not share the filesystem
  GPT2LAB_TEST_RANK1_NO_DATA=1  rank 1 finds no prepared data anywhere, as on
                                a node without rank 0's --data-dir
  GPT2LAB_TEST_GRAD_NORMS=DIR   (no fault) each rank appends every norm
                                clip_grad_norm_ returns to DIR/rank<R>.txt
  GPT2LAB_TEST_RANK0_DISK_FULL=1  rank 0's checkpoint write fails with ENOSPC
                                (a full disk on the node that writes)
"""

import errno
import os
import sys
import time

import torch

import gpt2.data.prepare as prepare_data
from gpt2 import train
from gpt2.run import checkpoint


def main():
    delay = float(os.environ.get("GPT2LAB_TEST_PREPARE_DELAY", "0"))
    if delay:
        prepare = prepare_data._prepare

        def slow_prepare(*args, **kwargs):
            time.sleep(delay)
            return prepare(*args, **kwargs)

        prepare_data._prepare = slow_prepare
    if os.environ.get("GPT2LAB_TEST_RANK1_CWD") and os.environ["RANK"] == "1":
        os.chdir(os.environ["GPT2LAB_TEST_RANK1_CWD"])
    if os.environ.get("GPT2LAB_TEST_RANK1_NO_DATA") and os.environ["RANK"] == "1":
        prepare_data.read_finished_meta = lambda folder: None
    norms_dir = os.environ.get("GPT2LAB_TEST_GRAD_NORMS")
    if norms_dir:
        clip = torch.nn.utils.clip_grad_norm_

        def recording_clip(*args, **kwargs):
            norm = clip(*args, **kwargs)
            with open(os.path.join(norms_dir, f"rank{os.environ['RANK']}.txt"), "a") as f:
                f.write(f"{norm.item()!r}\n")
            return norm

        torch.nn.utils.clip_grad_norm_ = recording_clip
    if os.environ.get("GPT2LAB_TEST_RANK0_DISK_FULL") and os.environ["RANK"] == "0":
        def disk_full(out_dir, state, is_best):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(out_dir, "ckpt.pt"))

        checkpoint.save_checkpoint = disk_full
    return train.main()


if __name__ == "__main__":
    sys.exit(main())
