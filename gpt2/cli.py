"""Command line of gpt2/train.py, derived from the Kconfig tree.

Every flag is a Kconfig option (lib/options.py: N_LAYER -> --n-layer); its
type, default, range, choices, help and group come from the tree, read with
no .config, so defaults live in Kconfig only and no table here lists flags.
An option whose dependencies are unmet at the defaults (SGD_MOMENTUM while
AdamW is selected) still gets the default Kconfig writes for it, so
`--optimizer sgd` alone is a complete command line.

`make train` runs `train.py @build/train.args [explicit flags]`: the @file
holds one JSON-encoded string per line (scripts/genconfig.py writes it), and
later flags override earlier ones, so the precedence is
Kconfig defaults < generated argument set < explicit flags.
"""

import argparse
import json

from lib.kconfig import load_tree
from lib.options import train_options

DESCRIPTION = "Train a GPT-2 model.  Defaults come from Kconfig; `make menuconfig` edits them."
METAVARS = {"int": "N", "float": "X", "str": "TEXT"}


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
    """The parser of gpt2/train.py: one flag per Kconfig option, grouped by
    Kconfig menu.  `kconf` defaults to the repository's tree, unloaded."""
    kconf = kconf or load_tree()
    parser = ArgsFileParser(prog="gpt2/train.py", description=DESCRIPTION,
                            fromfile_prefix_chars="@", allow_abbrev=False)
    groups = {}
    for option in train_options(kconf):
        if option.group not in groups:
            groups[option.group] = parser.add_argument_group(option.group)
        groups[option.group].add_argument(option.flag, *option.aliases, dest=option.dest,
                                          default=option.default(kconf), help=_help(option),
                                          **_argument_kind(option))
    return parser


def parse_args(argv=None):
    """Parse train.py's command line (sys.argv[1:] when argv is None)."""
    return build_parser().parse_args(argv)


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
    """The Kconfig prompt, symbol and default."""
    prompt = option.prompt.replace("%", "%%")  # argparse formats help with %
    return f"{prompt} [Kconfig {option.name}] (default: %(default)s)"
