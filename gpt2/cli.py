"""Command line of gpt2/train.py, built from Kconfig.

Every flag comes from gpt2/options.py TRAIN_FLAGS; its type, default, range,
choices and help come from the Kconfig symbol it maps, read with no .config,
so defaults live in Kconfig only.  A symbol whose dependencies are unmet at
the defaults (SGD_MOMENTUM while AdamW is selected) still gets the default
Kconfig writes for it, so `--optimizer sgd` alone is a complete command line.

`make train` runs `train.py @build/train.args [explicit flags]`: the @file
holds one JSON-encoded string per line (scripts/genconfig.py writes it), and
later flags override earlier ones, so the precedence is
Kconfig defaults < generated argument set < explicit flags.
"""

import argparse
import json

from kconfiglib import BOOL

from gpt2.options import FLOATS, TRAIN_FLAGS, dest
from lib.kconfig import (INT_BASES, ConfigError, choice_values, default_value, int_range,
                         load_tree, match_choice_value, menu_title, parse_float)

DESCRIPTION = "Train a GPT-2 model.  Defaults come from Kconfig; `make menuconfig` edits them."


class ArgsFileParser(argparse.ArgumentParser):
    """ArgumentParser whose @file arguments are one JSON string per line.

    JSON keeps any value (spaces, quotes, newlines, a leading '--') one
    argument; `--flag=value` in the file keeps it attached to its flag.
    """

    def convert_arg_line_to_args(self, arg_line):
        if not arg_line.strip():
            return []
        try:
            arg = json.loads(arg_line)
        except json.JSONDecodeError:
            arg = None
        if not isinstance(arg, str):
            self.error(f"argument file line {arg_line[:60]!r} is not a JSON string; "
                       "regenerate the file with `make`")
        return [arg]


def build_parser(kconf=None):
    """The parser of gpt2/train.py: one option per TRAIN_FLAGS entry, grouped
    by Kconfig menu.  `kconf` defaults to the repository's tree, unloaded."""
    kconf = kconf or load_tree()
    feeds = choice_values(kconf)
    parser = ArgsFileParser(prog="gpt2/train.py", description=DESCRIPTION,
                            fromfile_prefix_chars="@", allow_abbrev=False)
    groups = {}
    for name, flag in TRAIN_FLAGS.items():
        sym = kconf.syms.get(name)
        if sym is None or not sym.nodes:
            raise ConfigError(f"gpt2/options.py maps {name}, which Kconfig does not define")
        menu = menu_title(sym)
        if menu not in groups:
            groups[menu] = parser.add_argument_group(menu)
        values = feeds.get(name)
        options = _OPTION_KINDS[_kind(sym, feeds)](sym, values)
        groups[menu].add_argument(flag, dest=dest(flag), default=default_value(sym),
                                  help=_help(sym, values), **options)
    return parser


def parse_args(argv=None):
    """Parse train.py's command line (sys.argv[1:] when argv is None)."""
    return build_parser().parse_args(argv)


def _kind(sym, feeds):
    if sym.orig_type is BOOL:
        return "bool"
    if sym.orig_type in INT_BASES:
        return "int"
    if sym.name in FLOATS:
        return "float"
    return "choice" if sym.name in feeds else "str"


def _bool_option(sym, values):
    return {"action": argparse.BooleanOptionalAction}


def _int_option(sym, values):
    bounds, base = int_range(sym), INT_BASES[sym.orig_type]

    def checked_int(text):
        try:
            value = int(text, base)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if bounds and not bounds[0] <= value <= bounds[1]:
            raise argparse.ArgumentTypeError(f"{value} is outside [{bounds[0]}, {bounds[1]}]")
        return value

    return {"type": checked_int, "metavar": "N"}


def _float_option(sym, values):
    def checked_float(text):
        try:
            return parse_float(sym.name, text)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return {"type": checked_float, "metavar": "X"}


def _choice_option(sym, values):
    def one_of(text):
        value = match_choice_value(values, text)
        if value is None:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of: {', '.join(values)}")
        return value

    return {"type": one_of, "metavar": "{" + "|".join(values) + "}"}


def _str_option(sym, values):
    return {"metavar": "TEXT"}


_OPTION_KINDS = {
    "bool": _bool_option,
    "int": _int_option,
    "float": _float_option,
    "choice": _choice_option,
    "str": _str_option,
}


def _help(sym, values):
    """The Kconfig prompt (for a choice-fed symbol, the choice's prompt)."""
    prompt = next((node.prompt[0] for node in sym.nodes if node.prompt), None)
    if prompt is None and values:
        prompt = next(iter(values.values())).choice.nodes[0].prompt[0]
    prompt = (prompt or sym.name).replace("%", "%%")  # argparse formats help with %
    return f"{prompt} [Kconfig {sym.name}] (default: %(default)s)"
