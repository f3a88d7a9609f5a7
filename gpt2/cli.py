"""The command line of every entry point, derived from the Kconfig tree.

gpt2/train.py, gpt2/sample.py and gpt2/prepare_data.py (and any tool after
them) build their parsers here, through one builder, `Tool`: a tool names
the Kconfig menus (and single symbols) it reads, and every option there
becomes a flag as lib/options.py derives it (N_LAYER -> --n-layer, typed,
with Kconfig's default, range, choices and help, grouped by menu).  So an
option has the same flag in every tool (`--data-input` for train.py and
prepare_data.py, `--sample-top-k` for train.py and sample.py), and the
spellings a Kconfig help declares with "Also --input." are accepted
everywhere too, except where the alias is another option's own flag in that
tool (`--seed` is SEED in train.py, SAMPLE_SEED in sample.py).  A tool's
own flags that are no Kconfig option (--ckpt, --workers) come from `extra`.
No entry point keeps a table of option names (tests/test_options.py fails
if one does).

How .config reaches a tool (the one way): `--config FILE`, which every tool
accepts.  The file is loaded through kconfiglib (lib/kconfig.read_config,
strict: any warning is a one-line error) and its values become the
defaults, so the precedence is Kconfig < --config < flags.  `make sample`
passes `--config $(KCONFIG_CONFIG)` (scripts/sample.py).  `make train`, a
sweep and `make reproduce` hand train.py the same values written out once
as an argument file, `@build/train.args` (scripts/genconfig.py renders it
from the same lib/options.py options): one JSON-encoded string per line,
later flags overriding earlier ones, so the record of a run is the exact
command line that ran.  build/config.py is for make's own scripts
(scripts/launch.py, the dashboard), never read by an entry point.

Options whose dependencies are unmet (SGD_MOMENTUM while AdamW is selected)
still get the default Kconfig writes for them, so `--optimizer sgd` alone is
a complete command line.
"""

import argparse
import json
import re
import sys
from dataclasses import dataclass
from typing import Callable

from lib.errors import UserError
from lib.kconfig import float_range, help_text, int_range, load_tree, read_config
from lib.options import options, train_options

DESCRIPTION = "Train a GPT-2 model.  Defaults come from Kconfig; `make menuconfig` edits them."
METAVARS = {"int": "N", "float": "X", "str": "TEXT"}
CONFIG_HELP = "a .config whose values are the defaults (read strictly through kconfiglib); flags still win"


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


@dataclass(frozen=True)
class Tool:
    """An entry point's command line: which Kconfig options it reads.

    menus: titles of the Kconfig menus whose options are its flags (an
    option belongs to its innermost menu); empty: every train.py option.
    symbols: single options from other menus (sample.py's DEVICE, OUT_DIR).
    extra: adds the tool's own flags that are no Kconfig option.
    """

    prog: str
    description: str
    menus: tuple = ()
    symbols: tuple = ()
    extra: Callable = None

    def options(self, kconf):
        """The Kconfig options that are this tool's flags, in Kconfig order."""
        if not self.menus:
            return train_options(kconf)
        return [option for option in options(kconf) if option.group in self.menus or option.name in self.symbols]

    def parser(self, kconf=None):
        """The parser, defaults from `kconf` (default: the tree, unloaded;
        a tree with a .config loaded gives that file's values)."""
        kconf = kconf or load_tree()
        parser = ArgsFileParser(prog=self.prog, description=self.description, fromfile_prefix_chars="@",
                                allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--config", metavar="FILE", default=None, help=CONFIG_HELP)
        if self.extra is not None:
            self.extra(parser)
        chosen = self.options(kconf)
        taken = {flag for action in parser._actions for flag in action.option_strings}
        taken |= {option.flag for option in chosen}
        groups = {}
        for option in chosen:
            if option.group not in groups:
                groups[option.group] = parser.add_argument_group(option.group)
            aliases = [alias for alias in option.aliases if alias not in taken]
            taken.update(aliases)
            groups[option.group].add_argument(option.flag, *aliases, dest=option.dest,
                                              default=option.default(kconf), help=_help(option),
                                              **_argument_kind(option))
        return parser

    def parse_args(self, argv=None):
        """Parse the command line (sys.argv[1:] when argv is None), with
        --config's values as the defaults.  A bad --config file: one
        `error:` line, exit status 1.  The namespace has no `config`: the
        file's values are in it."""
        argv = sys.argv[1:] if argv is None else list(argv)
        pre = ArgsFileParser(add_help=False, fromfile_prefix_chars="@", allow_abbrev=False)
        pre.add_argument("--config", default=None)
        known, _ = pre.parse_known_args(argv)
        try:
            kconf = read_config(known.config) if known.config else load_tree()
        except UserError as err:
            sys.exit(f"error: {err}")
        args = self.parser(kconf).parse_args(argv)
        del args.config  # consumed: its values are the defaults (a run's record holds the values)
        return args


TRAIN = Tool("gpt2/train.py", DESCRIPTION)


def build_parser(kconf=None):
    """The parser of gpt2/train.py: one flag per Kconfig option, grouped by
    Kconfig menu.  `kconf` defaults to the repository's tree, unloaded."""
    return TRAIN.parser(kconf)


def parse_args(argv=None):
    """Parse train.py's command line (sys.argv[1:] when argv is None)."""
    return TRAIN.parse_args(argv)


def command_line(args, kconf=None):
    """The parsed flags `args` as one complete command line, in Kconfig
    order (`--max-iters=500`, `--no-bias`, ...): every flag's resolved
    value, whatever came from Kconfig, the @file or the command line.
    `train.py @file` with these lines re-creates `args` exactly."""
    kconf = kconf or load_tree()
    return [option.render(getattr(args, option.dest)) for option in train_options(kconf)]


def _argument_kind(option):
    if option.kind == "bool":
        return {"action": argparse.BooleanOptionalAction}

    def typed(text):
        try:
            return option.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    typed.__name__ = option.kind  # argparse names the type in some messages
    if option.kind == "choice":
        metavar = "{" + "|".join(option.values) + "}"
    elif option.kind == "list":
        metavar = "{none|" + "|".join(option.values) + "}[,...]"
    else:
        metavar = METAVARS[option.kind]
    return {"type": typed, "metavar": metavar}


def _help(option):
    """The Kconfig prompt, the first sentence of its help, its range, the
    symbol and the default: `--help` says what `make menuconfig` says."""
    text = " ".join(help_text(option.item).split())
    match = re.match(r"(.+?[.!?])(?:\s|$)", text)
    sentence = match.group(1) if match else text
    parts = [option.prompt.rstrip(".") + "."]
    if sentence and not sentence.startswith("A float in"):  # the range below says it
        parts.append(sentence)
    bounds = int_range(option.item) if option.kind == "int" else None
    if bounds:
        parts.append(f"Range {bounds[0]}..{bounds[1]}.")
    if option.kind == "float":
        low, high, low_inclusive, high_inclusive = float_range(option.item)
        parts.append(f"Range {'[' if low_inclusive else '('}{low:g}, {high:g}{']' if high_inclusive else ')'}.")
    body = " ".join(parts).replace("%", "%%")  # argparse formats help with %
    return f"{body} [Kconfig {option.name}] (default: %(default)s)"
