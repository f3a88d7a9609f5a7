"""The Kconfig tree, gpt2/options.py and train.py's parser agree.

Every visible option reaches train.py or a launch script, every mapped flag
exists in the parser with Kconfig's default, every choice feeds its hidden
symbol, and the Kconfig files keep the Linux layout.
"""

import argparse
import re

import pytest
from kconfiglib import BOOL, INT, STRING

from gpt2.cli import build_parser, parse_args
from gpt2.options import FLOATS, LAUNCH_OPTIONS, TRAIN_FLAGS, dest
from lib.kconfig import (REPO_ROOT, choice_values, default_value, int_range, load_tree,
                         parse_float, typed_value)

KCONFIG_FILES = [REPO_ROOT / name for name in ("Kconfig", "Kconfig.tracking", "gpt2/Kconfig")]

# The choices the project promises, as the values of their hidden symbols.
EXPECTED_CHOICES = {
    "MODEL": {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "custom"},
    "DATASET": {"shakespeare", "finewebedu", "openwebtext", "tinystories"},
    "OPTIMIZER": {"sgd", "adam", "adamw", "adamwadv", "adamwspam", "adamwprune"},
    "PRUNING_METHOD": {"none", "magnitude", "movement", "state"},
    "DTYPE": {"bfloat16", "float16", "float32"},
    "CPU_MATMUL": {"auto", "blas", "onednn"},
    "TRACKER": {"none", "trackio", "wandb", "trackio,wandb"},
}


@pytest.fixture(scope="module")
def kconf():
    return load_tree()


@pytest.fixture(scope="module")
def parser(kconf):
    return build_parser(kconf)


def has_prompt(sym):
    return any(node.prompt for node in sym.nodes)


def test_every_visible_option_is_mapped(kconf):
    unmapped = [sym.name for sym in kconf.unique_defined_syms
                if has_prompt(sym) and sym.choice is None
                and sym.name not in TRAIN_FLAGS and sym.name not in LAUNCH_OPTIONS]
    assert unmapped == [], "add these to gpt2/options.py (TRAIN_FLAGS or LAUNCH_OPTIONS)"


def test_every_mapped_symbol_is_a_complete_option(kconf):
    feeds = choice_values(kconf)
    for name in [*TRAIN_FLAGS, *LAUNCH_OPTIONS]:
        sym = kconf.syms.get(name)
        assert sym is not None and sym.nodes, f"{name} is not defined in Kconfig"
        assert has_prompt(sym) or name in feeds, f"{name} has no prompt and no choice feeds it"
        assert all(node.help for node in sym.nodes), f"{name} has no help"
        assert sym.orig_defaults, f"{name} has no default"
        if sym.orig_type is INT:
            assert int_range(sym) is not None, f"int {name} has no range"


def test_floats_are_strings_with_valid_defaults(kconf):
    for name in FLOATS:
        sym = kconf.syms[name]
        assert sym.orig_type is STRING, f"float {name} must be a Kconfig string"
        assert isinstance(default_value(sym), float)


def test_every_choice_feeds_a_mapped_hidden_symbol(kconf):
    feeds = choice_values(kconf)
    assert {name: set(values) for name, values in feeds.items()} == EXPECTED_CHOICES
    for name, values in feeds.items():
        assert name in TRAIN_FLAGS
        assert not has_prompt(kconf.syms[name])
        members = list(values.values())
        assert {member.choice for member in members} == {members[0].choice}
        assert len(members) == len(members[0].choice.syms), f"a {name} entry feeds no value"
    for choice in kconf.unique_choices:
        assert any(choice is next(iter(values.values())).choice for values in feeds.values())


def test_hidden_value_follows_the_selection(kconf):
    feeds = choice_values(kconf)
    sym = kconf.syms["OPTIMIZER"]
    before = sym.str_value
    for value, member in feeds["OPTIMIZER"].items():
        member.set_value(2)
        assert sym.str_value == value
    kconf.unset_values()
    assert sym.str_value == before


def test_every_flag_is_in_the_parser(parser):
    options = {action.option_strings[0]: action
               for action in parser._actions if action.option_strings}
    for name, flag in TRAIN_FLAGS.items():
        assert flag in options, f"{flag} ({name}) missing from gpt2.cli.build_parser()"
        assert options[flag].dest == dest(flag)


def test_parser_defaults_are_kconfig_defaults(kconf):
    args = parse_args([])
    for name, flag in TRAIN_FLAGS.items():
        sym = kconf.syms[name]
        expected = typed_value(sym)
        if expected is None:  # dependency unmet at the defaults: Kconfig's own default
            expected = default_value(sym)
            assert expected is not None, name
        assert getattr(args, dest(flag)) == expected, flag


def test_embedded_default_is_the_tiny_trackio_run():
    args = parse_args([])
    assert (args.model, args.dataset, args.tracker) == ("custom", "shakespeare", "trackio")
    assert (args.n_layer, args.n_head, args.n_embd, args.block_size) == (4, 4, 128, 128)
    assert args.learning_rate == 1e-3 and args.max_iters == 500 and args.bias is False


def test_bools_turn_on_and_off():
    assert parse_args(["--bias"]).bias is True
    assert parse_args(["--bias", "--no-bias"]).bias is False
    assert parse_args(["--no-compile"]).compile is False


def test_unmet_dependency_still_has_a_usable_default():
    args = parse_args(["--optimizer", "sgd"])
    assert args.optimizer == "sgd" and args.momentum == 0.9


def test_tracker_lists_match_in_any_order():
    assert parse_args(["--tracker", "wandb,trackio"]).tracker == "trackio,wandb"
    assert parse_args(["--tracker=wandb"]).tracker == "wandb"


@pytest.mark.parametrize("argv, message", [
    (["--dropout", "1.5"], "argument --dropout: DROPOUT='1.5' is outside [0, 1)"),
    (["--learning-rate", "fast"], "argument --learning-rate: LEARNING_RATE='fast' is not a number"),
    (["--n-layer", "0"], "argument --n-layer: 0 is outside [1, 128]"),
    (["--batch-size", "eight"], "argument --batch-size: 'eight' is not an integer"),
    (["--optimizer", "lion"], "argument --optimizer: 'lion' is not one of: sgd, adam, adamw"),
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


def test_float_parsing_names_the_option():
    assert parse_float("BETA2", "0.95") == 0.95
    with pytest.raises(Exception, match=r"BETA2='1' is outside \[0, 1\)"):
        parse_float("BETA2", "1")
    with pytest.raises(Exception, match="is outside"):
        parse_float("GRAD_CLIP", "inf")


def test_bool_options_use_boolean_optional_action(parser, kconf):
    for name, flag in TRAIN_FLAGS.items():
        action = next(a for a in parser._actions if flag in a.option_strings)
        is_bool = kconf.syms[name].orig_type is BOOL
        assert isinstance(action, argparse.BooleanOptionalAction) == is_bool, flag


@pytest.mark.parametrize("path", KCONFIG_FILES, ids=lambda p: p.name)
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
