"""Kconfig is the only declaration of an option: train.py's flags, the typed
configs and the scripts all follow from the tree, and these tests fail when
one of them drifts (a flag no option defines, an option no code reads, a
config field without a flag, a help group other than the option's menu).
"""

import argparse
import ast
import dataclasses
import re
from pathlib import Path

import pytest
from kconfiglib import STRING

from gpt2 import prepare_data, sample
from gpt2.cli import TRAIN, build_parser, parse_args
from gpt2.configs import RunConfig, config_classes
from gpt2.errors import UsageError
from scripts import export
from lib.kconfig import REPO_ROOT, help_text, load_tree
from lib.options import options, train_options

TOOLS = (TRAIN, sample.TOOL, prepare_data.TOOL, export.TOOL)
KCONFIG_FILES = sorted([REPO_ROOT / "Kconfig", REPO_ROOT / "Kconfig.tracking", *REPO_ROOT.glob("*/Kconfig"),
                        *REPO_ROOT.glob("lib/*/Kconfig"), *REPO_ROOT.glob("gpt2/*/Kconfig")])


@pytest.fixture(scope="module")
def kconf():
    return load_tree()


@pytest.fixture(scope="module")
def parser(kconf):
    return build_parser(kconf)


def config_fields():
    """{field name: config class} of every typed config, derived fields left out."""
    fields = {}
    for cls in config_classes():
        for field in dataclasses.fields(cls):
            if not field.metadata.get("derived"):
                fields.setdefault(field.name, []).append(cls.__name__)
    return fields


def test_every_train_option_reaches_a_typed_config(kconf):
    fields = config_fields()
    unread = [option.flag for option in train_options(kconf) if option.dest not in fields]
    assert unread == [], "these flags reach no config field (gpt2/configs.py, lib/optim, lib/pruning, lib/trackers)"


def test_every_flag_has_one_owning_config_field():
    """A flag is a (non-derived) field of exactly one typed config
    (LEARNING_RATE once sat in TrainingConfig and OptimizerConfig)."""
    shared = {name: owners for name, owners in config_fields().items() if len(owners) > 1}
    assert shared == {}, "make all but one of these fields derived (metadata={'derived': True})"


def test_every_config_field_is_a_flag(kconf):
    dests = {option.dest for option in train_options(kconf)}
    orphans = {name: owners for name, owners in config_fields().items() if name not in dests}
    assert orphans == {}, "config fields that no Kconfig option defines"


def test_make_only_options_are_read_by_a_script(kconf):
    """An option that is no train.py flag is a flag of another entry point
    (gpt2/sample.py's SAMPLE_NUM_SAMPLES) or read by name by one of make's
    scripts (NPROC_PER_NODE in scripts/launch.py)."""
    scripts = "".join(path.read_text() for path in (REPO_ROOT / "scripts").rglob("*.py"))
    tool_flags = {option.name for tool in TOOLS for option in tool.options(kconf)}
    for option in options(kconf):
        if not option.train_flag:
            assert option.name in tool_flags or f'"{option.name}"' in scripts, \
                f"{option.name} is marked 'not a train.py flag' but no tool or script reads it"


def enclosing_menus(path=REPO_ROOT / "Kconfig", stack=None, menus=None):
    """{symbol or choice name: menu title}, read from the Kconfig files' text
    following `source` (not through kconfiglib, so this checks the parser
    independently)."""
    stack, menus = stack if stack is not None else [], menus if menus is not None else {}
    for line in path.read_text().splitlines():
        if match := re.match(r'menu "(.*)"', line):
            stack.append(match.group(1))
        elif line.startswith("endmenu"):
            stack.pop()
        elif match := re.match(r'source "(.*)"', line):  # relative to the top folder
            enclosing_menus(REPO_ROOT / match.group(1), stack, menus)
        elif match := re.match(r"(?:config|menuconfig|choice) (\w+)", line):
            if stack:
                menus.setdefault(match.group(1), stack[-1])
    return menus


def test_help_groups_are_the_kconfig_menus(parser):
    menus = enclosing_menus()
    for group in parser._action_groups:
        for action in group._group_actions:
            if action.dest in ("help", "config"):
                continue
            assert menus[action.dest.upper()] == group.title, action.option_strings[0]


def test_every_flag_is_named_after_its_symbol(parser, kconf):
    flags = {action.option_strings[0]: action for action in parser._actions if action.dest not in ("help", "config")}
    assert sorted(flags) == sorted(f"--{o.name.lower().replace('_', '-')}" for o in train_options(kconf))
    for flag, action in flags.items():
        assert action.dest == flag[2:].replace("-", "_")
        assert isinstance(action, argparse.BooleanOptionalAction) == (action.type is None), flag


def test_float_declarations_parse(kconf):
    """A help that says "A float" but whose interval does not parse would make
    the option a plain string: caught here."""
    for sym in kconf.unique_defined_syms:
        if sym.orig_type is STRING and "A float" in help_text(sym):
            option = next(o for o in options(kconf) if o.item is sym)
            assert option.kind == "float", f"{sym.name}: write its range as 'A float in [low, high)'"


def test_embedded_default_is_the_tiny_trackio_run():
    args = parse_args([])
    assert (args.model, args.dataset, args.tracker) == ("custom", "shakespeare", "trackio")
    assert (args.n_layer, args.n_head, args.n_embd, args.block_size) == (4, 4, 128, 128)
    assert args.learning_rate == 1e-3 and args.max_iters == 500 and args.bias is False
    assert (args.optimizer, args.pruning_method, args.dtype, args.cpu_matmul) == ("adamw", "none", "bfloat16", "auto")


def test_bools_turn_on_and_off():
    assert parse_args(["--bias"]).bias is True
    assert parse_args(["--bias", "--no-bias"]).bias is False
    assert parse_args(["--no-compile"]).compile is False


def test_unmet_dependency_still_has_a_usable_default():
    args = parse_args(["--optimizer", "sgd"])
    assert args.optimizer == "sgd" and args.sgd_momentum == 0.9


def test_momentum_is_an_alias_of_sgd_momentum():
    assert parse_args(["--momentum", "0.5"]).sgd_momentum == 0.5
    assert parse_args(["--sgd-momentum", "0.7"]).sgd_momentum == 0.7


def test_tracker_lists_match_in_any_order():
    assert parse_args(["--tracker", "wandb,trackio"]).tracker == "trackio,wandb"
    assert parse_args(["--tracker=wandb"]).tracker == "wandb"
    assert parse_args(["--tracker", "none"]).tracker == "none"


@pytest.mark.parametrize("argv, message", [
    (["--dropout", "1.5"], "argument --dropout: DROPOUT='1.5' is outside [0, 1)"),
    (["--learning-rate", "fast"], "argument --learning-rate: LEARNING_RATE='fast' is not a number"),
    (["--n-layer", "0"], "argument --n-layer: 0 is outside [1, 128]"),
    (["--batch-size", "eight"], "argument --batch-size: 'eight' is not an integer"),
    (["--optimizer", "nonesuch"], "argument --optimizer: 'nonesuch' is not one of: sgd, adam, adamw"),
    (["--tracker", "tensorboard"], "argument --tracker: 'tensorboard': 'tensorboard' is unknown; use none"),
    (["--tracker", "none,wandb"], "'none' cannot be combined"),
    (["--max-it", "5"], "unrecognized arguments: --max-it 5"),
])
def test_bad_flag_is_a_one_line_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("gpt2/train.py: error: ") and message in last_line


def test_argument_file_is_one_json_string_per_line(tmp_path):
    args_file = tmp_path / "train.args"
    args_file.write_text('"--max-iters=7"\n\n"--data-dir=--not-a-flag"\n"--no-compile"\n')
    args = parse_args([f"@{args_file}"])
    assert (args.max_iters, args.data_dir, args.compile) == (7, "--not-a-flag", False)


def test_argument_file_rejects_a_line_that_is_not_json(tmp_path, capsys):
    args_file = tmp_path / "train.args"
    args_file.write_text("--max-iters=7\n")
    with pytest.raises(SystemExit) as exit_info:
        parse_args([f"@{args_file}"])
    assert exit_info.value.code == 2
    assert "is not a JSON string" in capsys.readouterr().err


def test_run_config_is_built_from_the_flags():
    run = RunConfig.from_flags(vars(parse_args(["--optimizer", "adamwspam", "--spam-theta", "10",
                                                "--tracker", "trackio,wandb", "--wandb-offline"])))
    assert run.optimizer.optimizer == "adamwspam" and run.optimizer_own.spam_theta == 10.0
    assert run.model.gpt_config().n_embd == 128 and run.training.decay_iters == 500
    assert sorted(run.tracking.backends) == ["trackio", "wandb"]
    assert run.tracking.backends["wandb"].wandb_offline is True


@pytest.mark.parametrize("argv, message", [
    (["--min-lr", "0.1", "--learning-rate", "0.01"], "--min-lr 0.1 is above --learning-rate 0.01"),
    (["--n-embd", "130", "--n-head", "4"], "--n-embd 130 must be divisible by --n-head 4"),
    (["--model", "gpt2", "--block-size", "2048"], "--block-size 2048 exceeds GPT-2's context"),
    (["--device", "tpu"], "--device tpu: not a supported device"),
])
def test_configs_refuse_bad_combinations_naming_the_flags(argv, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        RunConfig.from_flags(vars(parse_args(argv)))


def args_reads(path):
    """Names read as `args.<name>` in a Python file."""
    tree = ast.parse(Path(path).read_text())
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "args"}


def test_training_code_reads_typed_configs_not_the_namespace():
    """The loop and its setup read the configs; an `args.x` there could name
    a flag that does not exist and fail only at run time."""
    for path in ("gpt2/train.py", "gpt2/run/setup.py", "gpt2/run/precision.py"):
        assert args_reads(REPO_ROOT / path) <= {"out_dir"}, path


@pytest.mark.parametrize("path", KCONFIG_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_kconfig_layout(path):
    """Attributes are indented with one tab, help text with a tab and two spaces."""
    in_help = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if in_help and line.startswith("\t  "):
            continue
        in_help = line == "\thelp"
        if line[0].isspace():
            assert re.match(r"\t[a-z]", line), f"{path.name}:{number}: indent attributes with a tab"


# ----------------------------------------------------------------------------
# One way in for every entry point (gpt2/cli.py)

# Flags of make's scripts (not entry points) that share a Kconfig option's
# name but mean something of their own: the run a script re-creates or
# replays, its preset, its own scratch runs.  Nothing new belongs here.
SCRIPT_FLAGS = {
    ("scripts/bench/bench.py", "--device"): "the benchmark's device, with its own auto (cuda when available)",
    ("scripts/bench/bench.py", "--input"): "the text of the benchmark's own scratch data",
    ("scripts/experiments/reproduce.py", "--trackio-dir"): "where to look the recorded run up",
    ("scripts/launch.py", "--rdzv-endpoint"): "this node's override of the RDZV_ENDPOINT of build/config.py",
    ("scripts/experiments/reproduce.py", "--out-dir"): "where the re-created run writes (default: from the record)",
    ("scripts/tracking/replay_journal.py", "--out-dir"): "the run whose journal is replayed",
    ("scripts/tracking/replay_journal.py", "--tracker"): "the backends to replay to",
    ("scripts/configure.py", "--tracker"): "the preset's tracker suffix (defconfig-<name>-<tracker>)",
    ("scripts/gpu_check/check.py", "--input"): "the text of its own scratch runs",
    ("scripts/gpu_check/check.py", "--deterministic"): "its runs' --deterministic, for a bit-identical resume",
    ("scripts/gpu_check/eval_reference.py", "--device"): "the device of gpu-check's reference eval (cuda)",
}


def hand_written_option_names(path, kconf):
    """Where `path` names a Kconfig option's flag by hand: an
    add_argument("--flag") of an option's flag or alias, or a symbol name
    paired with a flag ({"SAMPLE_TOP_K": "--top-k"} or ("SAMPLE_TOP_K",
    "--top-k")).  [(line, what)]."""
    flags = {flag for option in options(kconf) for flag in (option.flag, *option.aliases)}
    names = {option.name for option in options(kconf)}
    tree = ast.parse(path.read_text(), str(path))
    found = []

    def text(node):
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            found += [(node.lineno, text(arg)) for arg in node.args if text(arg) in flags]
        pairs = []
        if isinstance(node, ast.Dict):
            pairs = zip(node.keys, node.values)
        elif isinstance(node, ast.Tuple) and len(node.elts) == 2:
            pairs = [node.elts]
        for key, value in pairs:
            if key is not None and text(key) in names and (text(value) or "").startswith("--"):
                found.append((node.lineno, f"{text(key)} -> {text(value)}"))
    return found


def test_no_entry_point_keeps_its_own_table_of_option_names(kconf):
    """gpt2/train.py, sample.py, prepare_data.py (and any tool) take their
    Kconfig options through gpt2/cli.Tool, so --data-input is --data-input
    everywhere; a hand-written flag or a symbol -> flag table fails here."""
    files = sorted([*(REPO_ROOT / "gpt2").rglob("*.py"), *(REPO_ROOT / "scripts").rglob("*.py")])
    found = {}
    for path in files:
        where = str(path.relative_to(REPO_ROOT))
        hits = [(line, what) for line, what in hand_written_option_names(path, kconf)
                if (where, what) not in SCRIPT_FLAGS]
        if hits:
            found[where] = hits
    assert found == {}, "derive these flags from Kconfig with gpt2/cli.Tool(menus=..., symbols=...)"


def test_the_scan_finds_a_hand_written_table(kconf, tmp_path):
    """The check above can fail: the table gpt2/sample.py used to keep, and
    prepare_data.py's hand-written --max-tokens."""
    old = tmp_path / "old_sample.py"
    old.write_text('FLAGS = {"SAMPLE_PROMPT": "--prompt", "SAMPLE_TOP_K": "--top-k"}\n'
                   'parser.add_argument("--max-tokens", type=int)\n')
    assert [what for _, what in hand_written_option_names(old, kconf)] == [
        "SAMPLE_PROMPT -> --prompt", "SAMPLE_TOP_K -> --top-k", "--max-tokens"]


def test_an_option_has_one_flag_name_in_every_tool(kconf):
    """The same option, the same flag (and aliases) in each tool that reads it."""
    for tool in TOOLS:
        parser = tool.parser(kconf)
        by_dest = {action.dest: action.option_strings for action in parser._actions}
        for option in tool.options(kconf):
            assert by_dest[option.dest][0] == option.flag, (tool.prog, option.name)
    sample_flags = {a.dest: a.option_strings for a in sample.TOOL.parser(kconf)._actions}
    prepare_flags = {a.dest: a.option_strings for a in prepare_data.TOOL.parser(kconf)._actions}
    train_flags = {a.dest: a.option_strings for a in TRAIN.parser(kconf)._actions}
    assert prepare_flags["data_input"] == train_flags["data_input"] == ["--data-input", "--input"]
    assert prepare_flags["data_max_tokens"] == train_flags["data_max_tokens"] == ["--data-max-tokens", "--max-tokens"]
    assert sample_flags["sample_top_k"] == train_flags["sample_top_k"] == ["--sample-top-k", "--top-k"]
    # --seed is SEED's own flag in train.py, so it is SAMPLE_SEED's alias only in sample.py.
    assert sample_flags["sample_seed"] == ["--sample-seed", "--seed"] and train_flags["sample_seed"] == ["--sample-seed"]
    assert "sample_interval" not in sample_flags  # "Samples during training" is not sample.py's menu


def test_every_tool_takes_dot_config_the_same_way(tmp_path):
    """--config FILE: its values are the defaults, flags still win."""
    config = tmp_path / ".config"
    config.write_text('CONFIG_DATA_DIR="somewhere"\nCONFIG_SAMPLE_TOP_K=7\nCONFIG_MAX_ITERS=9\n')
    args = prepare_data.TOOL.parse_args(["--config", str(config)])
    assert args.data_dir == "somewhere" and args.dataset == "shakespeare"
    args = sample.TOOL.parse_args(["--config", str(config), "--temperature", "0"])
    assert args.sample_top_k == 7 and args.sample_temperature == 0.0 and args.out_dir == "out"
    assert sample.TOOL.parse_args(["--config", str(config), "--top-k", "3"]).sample_top_k == 3
    args = TRAIN.parse_args(["--config", str(config), "--data-dir", "elsewhere"])
    assert args.max_iters == 9 and args.data_dir == "elsewhere" and args.sample_top_k == 7


def test_a_bad_dot_config_is_one_line_for_every_tool(tmp_path, capsys):
    config = tmp_path / ".config"
    config.write_text("CONFIG_SAMPLE_TOP_K=lots\n")
    for tool in TOOLS:
        with pytest.raises(SystemExit) as stop:
            tool.parse_args(["--config", str(config)])
        assert stop.value.code == f"error: {config}:1: CONFIG_SAMPLE_TOP_K=lots is not a decimal integer", tool.prog
