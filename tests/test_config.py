"""The configuration pipeline: presets, .config, generated files, make targets.

Every test works in a temporary folder; the repository's .config and build/
are never touched (the Makefile takes KCONFIG_CONFIG and BUILD).
"""

import hashlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from gpt2.cli import parse_args
from lib.kconfig import REPO_ROOT, ConfigError, load_tree, read_config, typed_value
from lib.options import options
from scripts import configure, genconfig, launch
from scripts.tracking import trackio_show

PRESETS = sorted(configure.presets())
TRACKERS = ["none", "trackio", "wandb", "trackio,wandb"]
# `make` with this interpreter and without the venv step, so tests need no .venv.
MAKE = ["make", "-s", "-C", str(REPO_ROOT), "-o", ".venv/.installed", f"PYTHON={sys.executable}"]


def configure_main(tmp_path, *argv):
    configure.main(["--config", str(tmp_path / ".config"), "--build-dir", str(tmp_path / "build"),
                    *argv])


def make(tmp_path, *targets):
    return subprocess.run([*MAKE, f"KCONFIG_CONFIG={tmp_path / '.config'}",
                           f"BUILD={tmp_path / 'build'}", *targets],
                          capture_output=True, text=True, timeout=60)


def digest(folder):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.iterdir())}


def settings_of(config_py):
    """The constants of a generated config.py, imported in a fresh interpreter."""
    code = ("import json, runpy, sys; values = runpy.run_path(sys.argv[1]); "
            "print(json.dumps({k: v for k, v in values.items() if k.isupper()}))")
    result = subprocess.run([sys.executable, "-c", code, str(config_py)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@pytest.fixture
def tiny(tmp_path):
    """tmp_path holding .config and build/ from the tiny Shakespeare preset."""
    configure_main(tmp_path, "defconfig", "gpt2-tiny-shakespeare")
    return tmp_path


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_cleanly_and_is_minimal(name, tmp_path):
    preset = configure.DEFCONFIGS / name
    kconf = read_config(preset)  # raises on any warning
    assert configure.presets()[name], f"{name} needs a description comment on its first line"
    kconf.write_min_config(str(tmp_path / "min"))
    body = [line for line in preset.read_text().splitlines() if not line.startswith("# ")
            or line.endswith(" is not set")]
    assert body == (tmp_path / "min").read_text().splitlines(), "presets are savedefconfig output"


@pytest.mark.parametrize("name, tracker", [("gpt2", "trackio"), ("gpt2-trackio", "trackio"),
                                           ("gpt2-wandb", "wandb"), ("gpt2-none", "none"),
                                           ("gpt2-wandb,trackio", "trackio,wandb")])
def test_gpt2_preset_with_a_tracker_suffix(name, tracker, tmp_path):
    """One 124M preset; `<preset>-<tracker>` (the names of the three presets
    it replaces) and TRACKER= pick the tracker."""
    configure_main(tmp_path, "defconfig", name)
    settings = settings_of(tmp_path / "build" / "config.py")
    assert settings["TRACKER"] == tracker
    assert (settings["MODEL"], settings["BLOCK_SIZE"], settings["DATASET"]) == ("gpt2", 1024, "finewebedu")
    # nanoGPT's 12 x 1024 x 40 as a total in tokens: the same on any number of GPUs.
    assert (settings["BATCH_SIZE"], settings["TOTAL_BATCH_TOKENS"], settings["LEARNING_RATE"]) == \
        (12, 491_520, 6e-4)
    assert f'"--tracker={tracker}"' in (tmp_path / "build" / "train.args").read_text()


def test_tiny_preset_runs_on_the_cpu(tiny):
    settings = settings_of(tiny / "build" / "config.py")
    assert (settings["DEVICE"], settings["DTYPE"], settings["COMPILE"]) == ("cpu", "float32", False)
    assert (settings["MODEL"], settings["N_LAYER"], settings["TRACKER"]) == ("custom", 4, "trackio")


@pytest.mark.parametrize("name", PRESETS)
def test_savedefconfig_round_trip(name, tmp_path):
    configure_main(tmp_path, "defconfig", name)
    first = (tmp_path / ".config").read_text()
    configure_main(tmp_path, "savedefconfig", "--out", str(tmp_path / "defconfig"))
    (tmp_path / ".config").unlink()
    kconf = read_config(tmp_path / "defconfig")
    kconf.write_config(str(tmp_path / ".config"), header=configure.HEADER)
    assert (tmp_path / ".config").read_text() == first


@pytest.mark.parametrize("tracker", TRACKERS + ["wandb,trackio"])
def test_tracker_override(tracker, tmp_path):
    configure_main(tmp_path, "defconfig", "gpt2", "--tracker", tracker)
    expected = "trackio,wandb" if "," in tracker else tracker
    assert settings_of(tmp_path / "build" / "config.py")["TRACKER"] == expected
    assert f'"--tracker={expected}"' in (tmp_path / "build" / "train.args").read_text()


def test_unknown_tracker_is_a_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "scripts.configure", "--config", str(tmp_path / ".config"),
         "defconfig", "gpt2-trackio", "--tracker", "tensorboard"],
        cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and not (tmp_path / ".config").exists()
    backends = ", ".join(next(option.values for option in options(load_tree()) if option.name == "TRACKER"))
    assert result.stderr == ("error: TRACKER='tensorboard': 'tensorboard' is unknown; use none, "
                             f"or one or more of {backends} joined by commas\n")


def test_unknown_preset_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="no preset 'gpt3'.*make list-defconfigs"):
        configure_main(tmp_path, "defconfig", "gpt3")


def edit(old, new):
    return lambda text: text.replace(old, new, 1) if old in text else pytest.fail(f"no {old!r}")


BAD_CONFIGS = {
    "unknown symbol": (lambda text: text + "CONFIG_N_LAYERS=4\n",
                       r":\d+: unknown option CONFIG_N_LAYERS; remove or correct the line"),
    "out-of-range int": (edit("CONFIG_N_LAYER=4", "CONFIG_N_LAYER=1000"),
                         r":\d+: CONFIG_N_LAYER=1000 is outside \[1, 128\]"),
    "int that is no number": (edit("CONFIG_N_LAYER=4", "CONFIG_N_LAYER=4.5"),
                              r":\d+: CONFIG_N_LAYER=4.5 is not a decimal integer"),
    "invalid bool": (edit("# CONFIG_COMPILE is not set", "CONFIG_COMPILE=maybe"),
                     r":\d+: CONFIG_COMPILE=maybe is not a bool; use y or n"),
    "unquoted string": (edit('CONFIG_DATA_DIR="data"', "CONFIG_DATA_DIR=data"),
                        r":\d+: CONFIG_DATA_DIR=data: a string must be one double-quoted value"),
    "text after a string": (edit('CONFIG_DATA_DIR="data"', 'CONFIG_DATA_DIR="da"ta"'),
                            r":\d+: CONFIG_DATA_DIR=\"da\"ta\": a string must be one"),
    "malformed line": (lambda text: text + "MAX_ITERS = 100\n",
                       r":\d+: malformed line 'MAX_ITERS = 100'; expected CONFIG_NAME=value"),
    "float that is no number": (edit('CONFIG_LEARNING_RATE="1e-3"', 'CONFIG_LEARNING_RATE="fast"'),
                                r":\d+: LEARNING_RATE='fast' is not a number"),
    "float out of range": (edit('CONFIG_DROPOUT="0.0"', 'CONFIG_DROPOUT="1.5"'),
                           r":\d+: DROPOUT='1.5' is outside \[0, 1\)"),
    "option set twice": (lambda text: text + "CONFIG_SEED=1\n",
                         r":\d+: CONFIG_SEED is set again \(first on line \d+\)"),
    "two choice entries": (edit("# CONFIG_OPTIMIZER_SGD is not set", "CONFIG_OPTIMIZER_SGD=y"),
                           r":\d+: CONFIG_OPTIMIZER_ADAMW=y but CONFIG_OPTIMIZER_SGD=y"),
    "hand-edited choice value": (lambda text: text + 'CONFIG_MODEL="gpt2"\n',
                                 r":\d+: CONFIG_MODEL='gpt2' disagrees with the choice that sets "
                                 r"MODEL \('custom'\); select CONFIG_MODEL_GPT2=y instead"),
    "hand-edited tracker list": (lambda text: text + 'CONFIG_TRACKER="wandb"\n',
                                 r":\d+: CONFIG_TRACKER='wandb' disagrees with the choice that sets "
                                 r"TRACKER \('trackio'\); set the CONFIG_TRACKER_<NAME> options instead"),
    "removed combined tracker": (lambda text: text + "CONFIG_TRACKER_TRACKIO_WANDB=y\n",
                                 r":\d+: CONFIG_TRACKER_TRACKIO_WANDB no longer exists; trackers are "
                                 r"independent options now: set CONFIG_TRACKER_TRACKIO=y"),
    "missing .config": (None, r": no such file; create it with `make defconfig-<name>`"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_is_one_line_and_leaves_outputs_alone(case, tiny):
    change, message = BAD_CONFIGS[case]
    config = tiny / ".config"
    if change is None:
        config.unlink()
    else:
        config.write_text(change(config.read_text()))
    before = digest(tiny / "build")
    with pytest.raises(SystemExit) as exit_info:
        genconfig.main(["--config", str(config), "--build-dir", str(tiny / "build")])
    message_line = str(exit_info.value.code)
    assert message_line.startswith(f"error: {config}") and "\n" not in message_line
    assert re.search(message, message_line), message_line
    assert digest(tiny / "build") == before


def test_bad_config_exits_non_zero_without_traceback(tiny):
    config = tiny / ".config"
    config.write_text(config.read_text().replace("# CONFIG_COMPILE is not set",
                                                 "CONFIG_COMPILE=maybe"))
    result = subprocess.run([sys.executable, "-m", "scripts.genconfig", "--config", str(config),
                             "--build-dir", str(tiny / "build")],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "CONFIG_COMPILE=maybe" in result.stderr


def test_kconfig_syntax_error_names_file_and_line(tmp_path):
    for name in ("Kconfig", "Kconfig.tracking", "gpt2/Kconfig"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text((REPO_ROOT / name).read_text())
    fragment = tmp_path / "gpt2" / "Kconfig"
    fragment.write_text(fragment.read_text().replace("config BIAS\n", "confg BIAS\n"))
    with pytest.raises(ConfigError) as error:
        load_tree(tmp_path / "Kconfig")
    assert f"{fragment}:" in str(error.value) and "confg BIAS" in str(error.value)
    assert "\n" not in str(error.value)


HOSTILE = {
    "TRACKER_RUN_NAME": "\"; import os; os.system('echo pwned') #",
    "TRACKER_PROJECT": "--max-iters=1",
    "DATA_DIR": "@/etc/passwd",
    "OUT_DIR": "back\\slash \\\" ''' \"\"\" end\\",
    "DATA_INPUT": "ünïcødé ✓ \u2028 line-separator \x85 next-line",
    "JSON_OUTPUT": "{{ config }} {% raw %} $(rm -rf /) `id`",
}


def escape(value):
    """A .config string literal, escaped the way kconfiglib reads it."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_hostile_strings_arrive_exactly(tiny):
    config = tiny / ".config"
    text = config.read_text()
    for name, value in HOSTILE.items():
        text = re.sub(rf"^CONFIG_{name}=.*$", lambda _: f"CONFIG_{name}={escape(value)}", text,
                      count=1, flags=re.MULTILINE)
    config.write_text(text, encoding="utf-8")
    genconfig.main(["--config", str(config), "--build-dir", str(tiny / "build")])
    settings = settings_of(tiny / "build" / "config.py")
    args = parse_args([f"@{tiny / 'build' / 'train.args'}"])
    for name, value in HOSTILE.items():
        assert settings[name] == value, name
        assert getattr(args, name.lower()) == value, name
    assert args.max_iters == 500 and args.data_max_tokens == 100000000


def test_newlines_cannot_escape_a_generated_file(tmp_path):
    """.config cannot hold a newline, but the generator must not rely on that."""
    kconf = load_tree()
    value = "line one\nimport os\r\n--max-iters=1\n"
    kconf.syms["TRACKER_RUN_NAME"].set_value(value)
    texts = genconfig.render(kconf)
    namespace = {}
    exec(compile(texts["config.py"], "config.py", "exec"), namespace)
    assert namespace["TRACKER_RUN_NAME"] == value
    args_file = tmp_path / "train.args"
    args_file.write_text(texts["train.args"])
    args = parse_args([f"@{args_file}"])
    assert args.tracker_run_name == value and args.max_iters == 500


def test_config_py_is_typed_and_complete(tiny):
    settings = settings_of(tiny / "build" / "config.py")
    kconf = load_tree()
    assert set(settings) == {sym.name for sym in kconf.unique_defined_syms} | set(kconf.named_choices)
    assert (settings["OPTIMIZER"], settings["TRACKER"], settings["TRACKER_TRACKIO"]) == ("adamw", "trackio", True)
    assert isinstance(settings["LEARNING_RATE"], float) and isinstance(settings["SEED"], int)
    assert settings["SGD_MOMENTUM"] is None and settings["WANDB_ENTITY"] is None  # deps unmet
    assert "TARGET_SPARSITY" not in (tiny / "build" / "train.args").read_text()


def test_precedence_defaults_then_args_file_then_flags(tmp_path):
    configure_main(tmp_path, "defconfig", "gpt2-trackio")
    args_file = f"@{tmp_path / 'build' / 'train.args'}"
    assert parse_args([]).max_iters == 500
    assert parse_args([args_file]).max_iters == 600000
    explicit = parse_args([args_file, "--max-iters", "100", "--no-compile"])
    assert (explicit.max_iters, explicit.compile, explicit.batch_size) == (100, False, 12)


def test_example_config_is_generated_from_kconfig():
    """.config.example is `make example-config` output; edit Kconfig, then
    regenerate it (this fails when it is stale)."""
    assert (REPO_ROOT / ".config.example").read_text() == configure.example_config(load_tree()), \
        ".config.example is stale: run `make example-config`"


def test_an_old_config_still_loads(tmp_path):
    """A .config written before trackers became independent options and the
    choices lost their string symbols (MODEL, TRACKER, ...) still works."""
    old = tmp_path / "old.config"
    old.write_text('CONFIG_MODEL_CUSTOM=y\nCONFIG_MODEL="custom"\n# CONFIG_TRACKER_NONE is not set\n'
                   '# CONFIG_TRACKER_TRACKIO is not set\nCONFIG_TRACKER_WANDB=y\n'
                   '# CONFIG_TRACKER_TRACKIO_WANDB is not set\nCONFIG_TRACKER="wandb"\n'
                   'CONFIG_OPTIMIZER_ADAMWSPAM=y\nCONFIG_OPTIMIZER="adamwspam"\n')
    genconfig.main(["--config", str(old), "--build-dir", str(tmp_path / "build")])
    settings = settings_of(tmp_path / "build" / "config.py")
    assert (settings["TRACKER"], settings["OPTIMIZER"], settings["MODEL"]) == ("wandb", "adamwspam", "custom")


def test_example_config_is_complete_and_at_defaults():
    example = REPO_ROOT / ".config.example"
    kconf = read_config(example)
    text = example.read_text()
    defaults = load_tree()
    for sym in defaults.unique_defined_syms:
        if any(node.prompt for node in sym.nodes):
            assert f"CONFIG_{sym.name}=" in text or f"# CONFIG_{sym.name} is not set" in text
        assert typed_value(kconf.syms[sym.name]) == typed_value(sym), sym.name
    for menu in ("Model", "Dataset", "Training", "Optimizer", "Pruning", "System",
                 "Experiment Tracking"):
        assert f"# --- {menu} ---" in text


def test_olddefconfig_without_config_uses_defaults_with_a_notice(tmp_path, capsys):
    configure_main(tmp_path, "olddefconfig")
    assert capsys.readouterr().out.startswith(f"no {tmp_path / '.config'}: using the defaults")
    assert settings_of(tmp_path / "build" / "config.py")["DEVICE"] == "cuda"


def test_listnewconfig_shows_options_a_preset_leaves_unset(tmp_path, capsys):
    config = tmp_path / ".config"
    config.write_text((configure.DEFCONFIGS / "gpt2-tiny-shakespeare").read_text())
    configure_main(tmp_path, "listnewconfig")
    listed = capsys.readouterr().out.splitlines()
    assert "CONFIG_N_LAYER=4" in listed and 'CONFIG_DATA_DIR="data"' in listed
    assert not any(line.startswith("CONFIG_DEVICE=") for line in listed)


def test_launch_command(tiny, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    settings = settings_of(tiny / "build" / "config.py")
    single = launch.command(settings, "build/train.args", ["--max-iters", "100"])
    assert single == [sys.executable, "-m", "gpt2.train", "@build/train.args", "--max-iters", "100"]
    settings.update(NPROC_PER_NODE=2, NNODES=3, RDZV_ENDPOINT="node0:29500")
    multi = launch.command(settings, "build/train.args", [])
    assert multi == [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                     "--nnodes", "3", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                     "node0:29500", "--rdzv-id", "gpt2lab", "-m", "gpt2.train", "@build/train.args"]


def test_trackio_show_command(tiny, monkeypatch):
    settings = settings_of(tiny / "build" / "config.py")
    monkeypatch.chdir(tiny)
    argv, env = trackio_show.dashboard(dict(settings, TRACKIO_DIR="/tmp/tio"), port=8080)
    checksum = hashlib.md5(str(tiny).encode()).hexdigest()[:8]
    assert argv[-3:] == ["show", "--project", f"{tiny.name}-{checksum}"]
    assert (env["GRADIO_SERVER_PORT"], env["TRACKIO_DIR"]) == ("8080", "/tmp/tio")
    argv, env = trackio_show.dashboard(dict(settings, TRACKER_PROJECT="mine"))
    assert argv[-1] == "mine" and env["GRADIO_SERVER_PORT"] == "7860"


def test_make_defconfig_then_outputs_are_up_to_date(tmp_path):
    result = make(tmp_path, "defconfig-gpt2-trackio", "TRACKER=wandb,trackio")
    assert result.returncode == 0, result.stderr
    assert settings_of(tmp_path / "build" / "config.py")["TRACKER"] == "trackio,wandb"
    assert make(tmp_path, "-q", "genconfig").returncode == 0  # nothing left to do
    bad = make(tmp_path, "defconfig-gpt2-trackio", "TRACKER=tensorboard")
    assert bad.returncode != 0 and "error: TRACKER='tensorboard': 'tensorboard' is unknown" in bad.stderr


def test_make_regenerates_when_config_changes_and_stops_on_errors(tmp_path):
    assert make(tmp_path, "genconfig").stdout.startswith(f"no {tmp_path / '.config'}")
    config = tmp_path / ".config"
    config.write_text(config.read_text().replace("CONFIG_MAX_ITERS=500", "CONFIG_MAX_ITERS=7"))
    assert make(tmp_path, "genconfig").returncode == 0
    assert '"--max-iters=7"' in (tmp_path / "build" / "train.args").read_text()
    before = digest(tmp_path / "build")
    config.write_text(config.read_text().replace("CONFIG_MAX_ITERS=7", "CONFIG_MAX_ITERS=0"))
    result = make(tmp_path, "genconfig")
    assert result.returncode != 0 and "CONFIG_MAX_ITERS=0 is outside" in result.stderr
    assert digest(tmp_path / "build") == before


def test_make_train_runs_launch_after_the_argument_set(tmp_path):
    result = make(tmp_path, "-n", "train", "ARGS=--max-iters 100")
    assert result.stdout.splitlines()[-1].endswith(
        f"-m scripts.launch --build-dir {tmp_path / 'build'} -- --max-iters 100")


def test_make_help_lists_every_target():
    result = subprocess.run(["make", "-s", "-C", str(REPO_ROOT), "help"],
                            capture_output=True, text=True, check=True)
    for target in ("menuconfig", "defconfig-<name>", "list-defconfigs", "savedefconfig",
                   "olddefconfig", "listnewconfig", "train", "trackio-show", "wandb-sync",
                   "bench", "test", "clean"):
        assert f"make {target} " in result.stdout, target


def test_make_help_names_the_user_variables():
    result = subprocess.run(["make", "-s", "-C", str(REPO_ROOT), "help"],
                            capture_output=True, text=True, check=True)
    variables = result.stdout.splitlines()[0]
    for name in ("TRACKER", "ARGS", "PORT", "KCONFIG_CONFIG", "BUILD", "DEFCONFIG", "TORCH_SPEC"):
        assert name in variables, name


def test_make_venv_runs_setup_even_with_a_stamp(tmp_path):
    """`make venv TORCH_SPEC=...` must reach an existing .venv (MAKE's -o
    treats the stamp as up to date)."""
    result = make(tmp_path, "-n", "venv")
    assert result.stdout.strip().endswith("scripts/setup_venv.py")


def test_make_list_defconfigs(tmp_path):
    listing = make(tmp_path, "list-defconfigs").stdout
    for name, description in configure.presets().items():
        assert f"{name}" in listing and description in listing


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs a pseudo-terminal (POSIX)")
def test_menuconfig_ends_when_its_terminal_closes(tmp_path):
    """Closing the window (or losing ssh) under `make menuconfig` hangs up
    make, not the menu; the menu must still end, not spin on a dead
    terminal, and must leave no .config behind when nothing was saved."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: make is the session leader, as in a shell
        os.execvp("make", [*MAKE, f"KCONFIG_CONFIG={tmp_path / '.config'}", f"BUILD={tmp_path / 'build'}",
                           "menuconfig"])
    screen, deadline = b"", time.monotonic() + 30
    while b"Experiment Tracking" not in screen and time.monotonic() < deadline:
        if select.select([terminal], [], [], 1.0)[0]:
            screen += os.read(terminal, 65536)
    assert b"Experiment Tracking" in screen, screen[-500:]  # the menu is up
    os.close(terminal)  # the window closes
    deadline = time.monotonic() + 15
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("menuconfig still running 15 s after its terminal closed")
        time.sleep(0.2)
    assert not (tmp_path / ".config").exists()


@pytest.mark.parametrize("preset", ["gpt2-tiny-shakespeare", "gpt2-trackio"])
def test_dot_config_and_the_args_file_are_one_transport(preset, tmp_path):
    """`train.py --config .config` (what every entry point accepts) and
    `train.py @build/train.args` (what make train, a sweep and reproduce
    pass) give the same flags: the args file is .config's values written
    out once, by the same lib/options.py options."""
    configure_main(tmp_path, "defconfig", preset)
    config = tmp_path / ".config"
    text = config.read_text().replace("# CONFIG_OPTIMIZER_SGD is not set", "CONFIG_OPTIMIZER_SGD=y")
    text = re.sub(r"^CONFIG_OPTIMIZER_ADAMW=y$", "# CONFIG_OPTIMIZER_ADAMW is not set", text, flags=re.MULTILINE)
    config.write_text(re.sub(r"^CONFIG_SAMPLE_PROMPT=.*$", lambda _: 'CONFIG_SAMPLE_PROMPT="it\'s $(x)"', text,
                             flags=re.MULTILINE))
    genconfig.main(["--config", str(config), "--build-dir", str(tmp_path / "build")])
    from_file = parse_args([f"@{tmp_path / 'build' / 'train.args'}"])
    from_config = parse_args(["--config", str(config)])
    assert vars(from_config) == vars(from_file)
    assert from_config.optimizer == "sgd" and from_config.sample_prompt == "it's $(x)"
