"""gpt2.train under torchrun with a fault of a real cluster injected, for
tests/test_multinode.py (run as the script torchrun starts):

  GPT2LAB_TEST_PREPARE_DELAY=S  preparing the dataset takes S seconds more
                                (FineWeb-Edu takes hours)
  GPT2LAB_TEST_RANK1_CWD=DIR    rank 1 runs in DIR, so relative --out-dir and
                                --data-dir name other folders there, as on a
                                node that does not share the filesystem
"""

import os
import sys
import time

import gpt2.prepare_data as prepare_data
from gpt2 import train


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
    return train.main()


if __name__ == "__main__":
    sys.exit(main())
