"""The steps of gpu-check, in order: STEPS, a list of (name, budget_s, function).

Each function takes the Context and returns a dict: "ok", a one-line
"summary", and its figures; it may add figures to ctx.figures (what
docs/benchmarks.md's GPU table shows).  The runner (scripts/gpu_check/check.py)
gives each step budget_s x LIMIT_FACTOR seconds, rewrites gpu-check.json
after it, and honours --skip NAME.  To add a step, write its function here
(or in a module of its own) and put it in STEPS; a step whose runs start
processes passes them ctx.remaining() as their timeout.  The budgets are
for one H200 and are derived in docs/benchmarks.md ("gpu-check's budget").

Only the GPU steps import torch's CUDA side; every API they use exists in
torch 2.4 (the oldest pyproject.toml allows), so torch 2.11 has them.
"""

import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from scripts.gpu_check import runs

MATMUL_SIZE = 8192


@dataclass
class Context:
    """What the steps share: the arguments, the work folder, the report
    being written, the figures, and the current step's deadline."""

    args: object
    work: Path
    say: object
    report: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    base: tuple = runs.RUN_FLAGS
    train_steps: int = runs.TRAIN_STEPS
    kill_at: int = runs.KILL_AT
    gpus: int = 1
    deadline: float = float("inf")
    _prepared: bool = False

    def remaining(self):
        """Seconds left of the current step's limit (a child's timeout); a day outside a step."""
        return min(max(self.deadline - time.monotonic(), 1.0), 86400.0)

    @property
    def build(self):
        return self.work / "build"

    def env(self):
        return runs.environment(self.work)

    def prepare(self):
        """The preset's .config and build/ (make defconfig-gpt2-trackio), and
        the local parquet, once for all training steps."""
        if self._prepared:
            return
        self.work.mkdir(parents=True, exist_ok=True)
        runs.shakespeare_parquet(self.args.input, self.work / "shakespeare.parquet")
        for command in runs.configure_commands(self.work / ".config", self.build):
            proc = subprocess.run(command, cwd=runs.REPO_ROOT, env=self.env(), capture_output=True, text=True,
                                  timeout=self.remaining())  # fmt: skip
            if proc.returncode:
                raise RuntimeError(f"{' '.join(command[2:4])} failed: {runs.last_line(proc.stderr or proc.stdout)}")
        self._prepared = True

    def flags(self, name, steps, extra=()):
        deterministic = ("--deterministic",) if getattr(self.args, "deterministic", False) else ()
        return runs.train_flags(self.work, name, [*self.base, *deterministic], steps, extra)


# ----------------------------------------------------------------------------
# On the GPU, in this process


def driver_version():
    """The NVIDIA driver's version (NVML, else nvidia-smi), or None."""
    try:
        import pynvml  # nvidia-ml-py: on the site's image, not required

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:  # no NVML: ask nvidia-smi
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout  # fmt: skip
            return out.split()[0] if out.strip() else None
        except (OSError, subprocess.TimeoutExpired):
            return None


def gpu_step(ctx):
    import torch

    props = torch.cuda.get_device_properties(0)
    nccl = torch.cuda.nccl.version() if torch.distributed.is_nccl_available() else None
    facts = {
        "name": torch.cuda.get_device_name(0),
        "count": torch.cuda.device_count(),
        "capability": f"{props.major}.{props.minor}",
        "memory_gib": props.total_memory / 2**30,
        "driver": driver_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "hip": torch.version.hip,
        "cudnn": torch.backends.cudnn.version(),
        "nccl": ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl,
    }
    ctx.gpus = facts["count"]
    ctx.figures.update({key: facts[key] for key in ("name", "count", "driver", "cuda", "nccl", "torch")})
    summary = (f"{facts['count']} x {facts['name']} (compute {facts['capability']}, {facts['memory_gib']:.0f} GiB) | "
               f"driver {facts['driver']} | torch {facts['torch']} | CUDA {facts['cuda']} | NCCL {facts['nccl']}")
    return {**facts, "ok": True, "summary": summary}  # fmt: skip


def matmul_step(ctx, seconds=2.0):
    """bf16 (8192 x 8192) products for about `seconds`, timed in batches of 10."""
    import torch

    from gpt2.run.mfu import gpu_peak_flops

    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        count += 10
    flops = 2 * MATMUL_SIZE**3 * count / (time.perf_counter() - start)
    del a, b
    torch.cuda.empty_cache()
    peak = gpu_peak_flops(torch.cuda.get_device_name(0), "bfloat16")
    result = {"tflops": flops / 1e12, "peak_tflops": peak / 1e12 if peak else None,
              "fraction_of_peak": flops / peak if peak else None}  # fmt: skip
    ctx.figures.update(matmul_tflops=result["tflops"], matmul_fraction_of_peak=result["fraction_of_peak"])
    summary = f"bf16 {MATMUL_SIZE}^3 at {result['tflops']:.0f} TFLOP/s" + (
        f" = {result['fraction_of_peak']:.0%} of the {result['peak_tflops']:.0f} peak" if peak
        else " (no peak for this GPU in gpt2/run/mfu.py)")  # fmt: skip
    return {**result, "ok": True, "summary": summary}


SDPA_OPS = {  # aten operator -> backend, as torch's profiler names them
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_attention_math": "math",
}


def sdpa_backend(op_names):
    """Which attention backend ran, from the operator names a profile saw."""
    found = sorted({backend for op, backend in SDPA_OPS.items() if op in op_names})
    return found[0] if len(found) == 1 else ("+".join(found) or "unknown")


def sdpa_step(ctx):
    """Causal attention at the 124M preset's shapes (batch 12, 12 heads,
    1,024 tokens, 64 wide, bf16), forward and backward under torch's
    profiler: the backend torch picked (flash, efficient, cudnn or math)."""
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    q, k, v = (torch.randn(12, 12, 1024, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))  # fmt: skip
    F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
        torch.cuda.synchronize()
    names = {event.key for event in prof.key_averages()}
    backend = sdpa_backend(names)
    ctx.figures["sdpa_backend"] = backend
    return {"backend": backend, "ops": sorted(n for n in names if "attention" in n), "ok": backend != "unknown",
            "summary": f"causal attention ran on the {backend} backend"}  # fmt: skip


def bench_step(ctx):
    """`make bench --device cuda`'s training row, through its own machinery."""
    from gpt2.data.prepare import ensure_prepared
    from scripts.bench.bench import PLANS, scratch_environment
    from scripts.bench.rows import Workspace, run_step_worker, training_row

    scratch = ctx.work / "bench"
    scratch.mkdir(parents=True, exist_ok=True)
    text_path = ctx.args.input
    ensure_prepared("shakespeare", scratch / "data", input_path=str(text_path), log=lambda _: None)
    data_flags = ("--dataset", "shakespeare", "--data-dir", str(scratch / "data"), "--data-input", str(text_path))
    workspace = Workspace(scratch=scratch, env=scratch_environment(scratch), data_flags=data_flags)
    row = PLANS["full"].train["cuda"][0]
    spec = {"flags": [*row.flags, "--tracker", "none", *data_flags], "warmup": row.warmup, "iters": row.iters}
    result = training_row(row.name, "train", run_step_worker(row.name, spec, workspace, timeout=ctx.remaining()))
    bench = {key: result[key] for key in ("name", "ms_per_iter", "tokens_per_sec", "mfu", "peak_memory_mb", "note")}
    mfu = f"{bench['mfu']:.1%}" if bench["mfu"] is not None else "unknown"
    return {**bench, "ok": True, "summary": f"{bench['name']}: {bench['ms_per_iter']:.1f} ms/iter, "
            f"{bench['tokens_per_sec']:,.0f} tokens/s, MFU {mfu}"}  # fmt: skip


# ----------------------------------------------------------------------------
# Training runs, in processes of their own


def preset_step(ctx):
    """The preset for train_steps steps: the loss goes down, its points are
    in Trackio's database, and its speed at its own recipe."""
    ctx.prepare()
    done = runs.run(runs.train_command(ctx.build, ctx.flags("preset", ctx.train_steps)), ctx.env(), ctx.remaining())
    reference = runs.losses_of(done.output)
    first, last = (reference[min(reference)], reference[max(reference)]) if reference else (None, None)
    points = runs.trackio_loss_points(ctx.work / "trackio")
    speed = runs.speed_of(done.output, ctx.work / "preset.json")
    ok = done.status == 0 and bool(reference) and last < first and points >= len(reference)
    ctx.figures.update({f"preset_{key}": value for key, value in speed.items()})
    summary = f"{len(reference)} loss lines, {first} -> {last}, {points} points in Trackio" + (
        f", {speed['tokens_per_sec']:,.0f} tok/s" if speed["tokens_per_sec"] else "")
    return {"exit": done.status, "losses": reference, "trackio_loss_points": points, **speed, "ok": ok,
            "summary": summary + ("" if ok else f" FAILED: {runs.last_line(done.output)}")}  # fmt: skip


def resume_step(ctx):
    """The preset's run again, SIGKILLed on its step-kill_at eval line
    (printed after that checkpoint is written), then --resume: the verdict
    of scripts/gpu_check/runs.py's resume_verdict against the preset step."""
    reference = ctx.report.get("steps", {}).get("preset", {}).get("losses")
    if not reference:
        return {"ok": False, "summary": "needs the preset step's losses (it was skipped or failed)"}
    ctx.prepare()
    flags = ctx.flags("resume", ctx.train_steps)
    # The watchdog must not fire first: the whole step's time is left for the two runs.
    killed = runs.run(runs.train_command(ctx.build, flags), ctx.env(), ctx.remaining() * 0.5,
                      kill_after_line=f"eval {ctx.kill_at} |")  # fmt: skip
    resumed = runs.run(runs.train_command(ctx.build, [*flags, "--resume"]), ctx.env(), ctx.remaining())
    verdict = runs.resume_verdict(killed, resumed, {int(k): v for k, v in reference.items()}, ctx.kill_at)
    ctx.figures.update(resume_ok=verdict["ok"], resume_identical=verdict["identical"],
                       resume_max_abs_diff=verdict["max_abs_diff"])
    summary = (f"killed on the step-{ctx.kill_at} checkpoint line: {verdict['killed_on_cue']}, resumed at "
               f"{verdict['resumed_at']}, {len(verdict['steps_compared'])} losses compared, largest difference "
               f"{verdict['max_abs_diff']}, identical: {verdict['identical']}")
    return {**verdict, "summary": summary + ("" if verdict["ok"] else " FAILED: " + "; ".join(verdict["failures"]))}


def ddp_step(ctx):
    """With 2+ GPUs: the preset under torchrun, one process per GPU (at most
    8), DDP_STEPS steps; scaling = its tok/s over one GPU's x processes."""
    if ctx.gpus < 2:
        return {"ok": True, "skipped": "one GPU", "summary": "skipped (one GPU)"}
    ctx.prepare()
    nproc = min(ctx.gpus, 8)
    flags = ctx.flags("ddp", runs.DDP_STEPS, extra=["--gradient-accumulation-steps", str(4 * nproc)])
    done = runs.run(runs.train_command(ctx.build, flags, nproc=nproc), ctx.env(), ctx.remaining())
    losses = runs.losses_of(done.output)
    speed = runs.speed_of(done.output, ctx.work / "ddp.json")
    single = ctx.figures.get("preset_tokens_per_sec")
    scaling = speed["tokens_per_sec"] / (nproc * single) if single and speed["tokens_per_sec"] else None
    ctx.figures.update(ddp_processes=nproc, ddp_tokens_per_sec=speed["tokens_per_sec"], ddp_scaling=scaling)
    ok = done.status == 0 and bool(losses)
    return {"processes": nproc, "exit": done.status, "losses": losses, **speed, "scaling": scaling, "ok": ok,
            "summary": f"{nproc} processes, {len(losses)} loss lines, scaling {scaling}"
            + ("" if ok else f" FAILED: {runs.last_line(done.output)}")}  # fmt: skip


BATCH_AUTO_STEPS = 2
BATCH_AUTO_LINE = re.compile(r"^batch size auto: (\d+) sequences per micro-batch", re.M)


def batch_auto_step(ctx):
    """BATCH_SIZE_AUTO's real probe (gpt2/run/batch_probe.py): the preset
    with --batch-size-auto for BATCH_AUTO_STEPS steps, trying full steps at
    growing micro-batches until one runs out of memory; the size found, the
    sizes tried, and the run's provenance record of them."""
    ctx.prepare()
    name = "batch_auto"
    flags = ctx.flags(name, BATCH_AUTO_STEPS, extra=["--batch-size-auto", "--eval-interval", "1000"])
    done = runs.run(runs.train_command(ctx.build, flags), ctx.env(), ctx.remaining())
    found = BATCH_AUTO_LINE.search(done.output)
    record = None
    journal = ctx.work / name / "tracking.jsonl"
    if journal.is_file():
        first = json.loads(journal.read_text().splitlines()[0])
        record = (first.get("config") or {}).get("provenance", {}).get("batch_size_auto")
    size = int(found.group(1)) if found else None
    ok = done.status == 0 and size is not None and bool(record) and record.get("batch_size") == size
    ctx.figures.update(batch_size_auto=size)
    summary = f"micro-batch {size} for the preset (sizes tried: {(record or {}).get('tried')})"
    return {"exit": done.status, "batch_size": size, "record": record, "ok": ok,
            "summary": summary + ("" if ok else f" FAILED: {runs.last_line(done.output)}")}


def hellaswag_step(ctx):
    """With internet: OpenAI's 124M on HellaSwag, llm.c's acc_norm 29.55 and
    the harness's 31.14 within 0.1 (scripts/gpu_check/eval_reference.py);
    skipped offline, saying why."""
    import json
    import sys

    from scripts.gpu_check import eval_reference

    reason = eval_reference.offline_reason()
    if reason:
        return {"ok": True, "skipped": reason, "summary": f"skipped ({reason})"}
    command = [sys.executable, "-m", "scripts.gpu_check.eval_reference", "--work", str(ctx.work / "eval")]
    done = runs.run(command, ctx.env(), ctx.remaining())
    lines = [line for line in done.output.splitlines() if line.startswith('{"metrics"')]
    result = json.loads(lines[-1]) if lines else {"verdict": {}}
    got = {name: v["got"] for name, v in result["verdict"].items()}
    ctx.figures.update({f"eval_{name}": value for name, value in got.items()})
    ok = done.status == 0 and bool(got)
    return {**result, "exit": done.status, "ok": ok, "summary": f"{got} (expected {eval_reference.EXPECTED})"
            + ("" if ok else f" FAILED: {runs.last_line(done.output)}")}  # fmt: skip


# (name, budget in seconds on one H200, function): docs/benchmarks.md derives
# each budget.  ddp runs only with 2+ GPUs; on one its 0.1 s is the skip.
STEPS = [
    ("gpu", 5, gpu_step),
    ("matmul", 15, matmul_step),
    ("sdpa", 10, sdpa_step),
    ("bench", 75, bench_step),
    ("preset", 150, preset_step),
    ("resume", 140, resume_step),
    ("ddp", 90, ddp_step),
    ("batch_auto", 80, batch_auto_step),
]
# The reference scores need the Hub and GitHub: a machine with internet runs
# them with --references (the air-gapped first GPU machine cannot), after STEPS.
REFERENCE_STEPS = [
    ("hellaswag", 600, hellaswag_step),  # estimated, not yet measured (docs/benchmarks.md)
]
STEP_NAMES = [name for name, _, _ in STEPS + REFERENCE_STEPS]


def budget_on_one_gpu(steps=STEPS):
    """The stated total for one H200 (ddp skips there)."""
    return sum(budget for name, budget, _ in steps if name != "ddp")

