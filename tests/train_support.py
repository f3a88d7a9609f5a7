"""The tiny model the training tests share: 2 layers, 32 wide, 4 x 32-token
batches, on the CPU without tracking; a step takes milliseconds (most of it
the 50,304-way output layer)."""

TINY = [
    "--device", "cpu", "--dtype", "float32", "--no-compile", "--tracker", "none",
    "--model", "custom", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
    "--block-size", "32", "--batch-size", "4", "--eval-iters", "2",
    "--warmup-iters", "2", "--log-interval", "1",
]  # fmt: skip


def shakespeare_flags(data_dir, input_path):
    """The data flags of a run on the prepared Tiny Shakespeare."""
    return ["--dataset", "shakespeare", "--data-dir", str(data_dir), "--data-input", str(input_path)]
