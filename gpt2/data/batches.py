"""Random (input, target) windows from the uint16 token files train.bin / val.bin.

Training draws offsets from its own torch.Generator, seeded per rank, so where
the run is in its data is one small state tensor that goes into the
checkpoint: a resumed run reads exactly the batches an uninterrupted one would.
With a `shard` (TOTAL_BATCH_TOKENS, gpt2/run/batch_size.py) every rank draws
the offsets of the whole optimizer step from the same generator and reads
only its own part, so a step sees the same sequences on any number of ranks.
Evaluation uses a fresh generator with a fixed seed every time, so each eval
scores the same batches and eval losses are comparable across a run.
"""

from pathlib import Path

import numpy as np
import torch

from gpt2.errors import UsageError

SPLITS = ("train", "val")


class Batches:
    """Batch reader for one prepared data folder."""

    def __init__(self, data_dir, *, block_size, batch_size, device, train_seed, eval_seed, shard=None):
        """`shard`: (rank, world_size, micro_steps) to draw whole steps
        (the same `train_seed` on every rank); None: this rank's own draws."""
        self.data_dir = Path(data_dir)
        self.shard = shard
        self._step_offsets = []  # this rank's micro-batches of the step being read (with a shard)
        self.block_size = block_size
        self.batch_size = batch_size
        self.device = device
        self.eval_seed = eval_seed
        self.train_generator = torch.Generator().manual_seed(train_seed)
        for split in SPLITS:
            tokens = len(self._tokens(split))
            if tokens <= block_size:
                raise UsageError(
                    f"{self.data_dir / f'{split}.bin'} holds {tokens:,} tokens, too few for "
                    f"--block-size {block_size}; lower --block-size or prepare more data"
                )

    def _tokens(self, split):
        # A fresh memmap per batch: numpy's memmap keeps every page it touched
        # referenced, and a long run would slowly hold the whole file in RAM.
        return np.memmap(self.data_dir / f"{split}.bin", dtype=np.uint16, mode="r")

    def _read(self, split, generator):
        tokens = self._tokens(split)
        return self._windows(tokens, self._offsets(tokens, generator))

    def _offsets(self, tokens, generator):
        return torch.randint(len(tokens) - self.block_size, (self.batch_size,), generator=generator)

    def _windows(self, tokens, offsets):
        windows = torch.stack(
            [torch.from_numpy(tokens[i : i + self.block_size + 1].astype(np.int64)) for i in offsets.tolist()]
        )
        x, y = windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
        if self.device.type == "cuda":
            # Pinned host memory lets the copy overlap with the running step.
            return (
                x.pin_memory().to(self.device, non_blocking=True),
                y.pin_memory().to(self.device, non_blocking=True),
            )
        return x.to(self.device), y.to(self.device)

    def next_train(self):
        """The next training batch (advances the training generator)."""
        if self.shard is None:
            return self._read("train", self.train_generator)
        tokens = self._tokens("train")
        if not self._step_offsets:
            rank, world_size, micro_steps = self.shard
            per_rank = self.batch_size * micro_steps
            every = torch.randint(len(tokens) - self.block_size, (per_rank * world_size,), generator=self.train_generator)
            mine = every[rank * per_rank : (rank + 1) * per_rank]
            self._step_offsets = list(mine.split(self.batch_size))
        return self._windows(tokens, self._step_offsets.pop(0))

    def eval_batches(self, split, count, rank=0, world_size=1):
        """(i, batch) for the batches i of `split` that are this rank's
        (i % world_size == rank) among `count`, the same ones at every call
        and on every number of ranks: the offsets of all `count` are drawn,
        only this rank's windows are read."""
        generator = torch.Generator().manual_seed(self.eval_seed)
        tokens = self._tokens(split)
        for i in range(count):
            offsets = self._offsets(tokens, generator)
            if i % world_size == rank:
                yield i, self._windows(tokens, offsets)

    def state_dict(self):
        return {"train_generator": self.train_generator.get_state()}

    def load_state_dict(self, state):
        self.train_generator.set_state(state["train_generator"])
