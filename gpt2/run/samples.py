"""The text samples logged during training: at every --sample-interval-th
evaluation (and the last one) rank 0 continues --sample-prompt by
--sample-training-tokens tokens and logs it to the console (one line, cut),
the journal and each tracker as a table (step, prompt, text).

Sampling draws from its own torch.Generator, seeded with --sample-seed at
every sample (the same draws each time, so the texts differ only by what the
model learned), and runs the unwrapped model in eval mode without DDP: the
global RNG, the batches' generators and the other ranks are untouched, so a
run with samples trains exactly as one without (tests/test_sample.py).
"""

import time

import torch

from gpt2.model.generate import encode_prompt, prompt_text, sample_texts

TABLE_KEY = "samples"
COLUMNS = ["step", "prompt", "text"]
CONSOLE_CHARS = 100  # the console line shows this much of the text


class TrainingSampler:
    def __init__(self, sampling, eval_interval):
        self.cfg = sampling
        self.eval_interval = eval_interval
        self.prompt = prompt_text(sampling.sample_prompt)
        self.prompt_ids = encode_prompt(self.prompt)
        self.seconds = 0.0  # time spent sampling in this run
        self.last_seconds = 0.0

    def due(self, iter_num, last):
        """Whether the evaluation at `iter_num` logs a sample."""
        if self.cfg.sample_interval <= 0:
            return False
        return last or (iter_num // self.eval_interval) % self.cfg.sample_interval == 0

    def sample(self, model, device):
        """The text of one sample from `model` (the raw model; put back in
        training mode afterwards); self.last_seconds: the time it took."""
        start = time.perf_counter()
        generator = torch.Generator(device=device).manual_seed(self.cfg.sample_seed)
        was_training = model.training
        model.eval()
        try:
            (text,) = sample_texts(model, self.prompt_ids, num_samples=1,
                                   max_new_tokens=self.cfg.sample_training_tokens,
                                   temperature=self.cfg.sample_temperature, top_k=self.cfg.sample_top_k,
                                   generator=generator)
        finally:
            model.train(was_training)
        self.last_seconds = time.perf_counter() - start
        self.seconds += self.last_seconds
        return text

    def log(self, run, text, seconds):
        """The console line (with the seconds the sample took), and the
        table row to the journal and trackers."""
        run.trackers.table(TABLE_KEY, COLUMNS, [[run.state.iter_num, self.prompt, text]], step=run.state.iter_num)
        shown = (self.prompt + text).replace("\n", "\\n")
        cut = shown[:CONSOLE_CHARS] + ("..." if len(shown) > CONSOLE_CHARS else "")
        run.log(f"sample {run.state.iter_num} | {seconds:.2f} s | {cut}")


def training_sampler(cfg, dist):
    """The run's TrainingSampler (`cfg`: its RunConfig), or None with
    --sample-interval 0 and on the ranks other than 0."""
    if cfg.sampling.sample_interval <= 0 or not dist.is_main:
        return None
    return TrainingSampler(cfg.sampling, cfg.training.eval_interval)
