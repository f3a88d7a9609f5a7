"""The options of gpt2/train.py, derived from the Kconfig tree: the one declaration.

Every Kconfig option a user can set is a flag, named after its symbol
(N_LAYER -> --n-layer, argparse dest n_layer), typed by its Kconfig type,
with Kconfig's default, range and prompt, grouped under its menu's title:

  bool                       --bias / --no-bias
  int (with its `range`)     --n-layer N
  string                     --data-dir TEXT
  float: a string whose help says "A float in [0, 1)"   --dropout X
  named choice (`choice OPTIMIZER`, members OPTIMIZER_<VALUE>)
                             --optimizer adamw   (values from the member names)
  list: a prompt-less string without default whose members are the bools
        <NAME>_<VALUE>       --tracker trackio,wandb  (or none)

Two more help-text conventions: "Also --momentum." adds another name for the
flag, and "Not a train.py flag" marks an option that only make's scripts
read (NPROC_PER_NODE for scripts/launch.py, TRACKIO_PORT for the dashboard)
or another entry point (SAMPLE_NUM_SAMPLES for gpt2/sample.py).

Scalar values are typed by lib/kconfig.py's kind() and parse_value() (the one
switch on an option's type); choices and lists here.  gpt2/cli.py builds
every entry point's parser from these (train.py, sample.py, prepare_data.py:
the same option, the same flag), scripts/genconfig.py writes .config's values
with them into build/train.args, and tests/test_options.py checks that every
option reaches the code that reads it.
"""

import re
from dataclasses import dataclass

from kconfiglib import BOOL, Choice, Symbol

from lib.kconfig import ConfigError, default_value, help_text, kind, menu_title, one_line, parse_value, typed_value
from lib.kconfig_derived import (LIST_NONE, choice_members, choice_value, has_prompt, is_list, list_members,
                                 list_value)

ALIAS = re.compile(r"\bAlso (--[a-z0-9][a-z0-9-]*)")
NOT_A_FLAG = re.compile(r"\bnot a (?:gpt2/)?train\.py flag\b", re.IGNORECASE)


def flag_name(name):
    """'N_LAYER' -> '--n-layer'."""
    return "--" + name.lower().replace("_", "-")


def dest(flag):
    """argparse destination of a flag: '--max-iters' -> 'max_iters'."""
    return flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True, eq=False)
class Option:
    """One option: a Kconfig symbol, named choice or list, seen as a flag."""

    item: object  # the kconfiglib Symbol or Choice
    kind: str  # bool, int, float, str, choice or list
    group: str  # title of the Kconfig menu it is in
    prompt: str
    aliases: tuple  # further flag names ("Also --momentum.")
    train_flag: bool  # False for "Not a train.py flag" options
    values: tuple = ()  # the values of a choice or a list

    @property
    def name(self):
        return self.item.name

    @property
    def flag(self):
        return flag_name(self.name)

    @property
    def dest(self):
        return dest(self.flag)

    def parse(self, text):
        """The typed value of `text` as given on a command line; ValueError
        with a one-line message when it is not a valid value."""
        return _PARSERS[self.kind](self, text)

    def value(self, kconf):
        """The current (.config) value; None when its dependencies are unmet."""
        if self.kind == "choice":
            return choice_value(self.item)
        if self.kind == "list":
            return list_value(kconf, self.item)
        return typed_value(self.item)

    def default(self, kconf):
        """The value when no flag is given: Kconfig's default, also for an
        option whose dependencies are unmet at the defaults (SGD_MOMENTUM
        while AdamW is selected), so `--optimizer sgd` alone is complete."""
        if self.kind == "choice":
            if self.item.selection is None and self.item.defaults:  # a choice whose dependencies are unmet
                return next(v for v, sym in choice_members(self.item).items() if sym is self.item.defaults[0][0])
            return choice_value(self.item)
        if self.kind == "list":
            members = list_members(kconf, self.item).values()
            return list_value(kconf, self.item, {m.name: default_value(m) for m in members})
        return default_value(self.item)

    def render(self, value):
        """The command-line form of `value`, one argument: `--flag=value`
        keeps a value that starts with '-' or '@' a value."""
        if self.kind == "bool":
            return self.flag if value else f"--no-{self.flag[2:]}"
        return f"{self.flag}={value}"  # str(float) is its repr: the shortest exact form


def options(kconf):
    """Every option of the tree, in menu order (train.py flags and the
    options only make's scripts read)."""
    found, seen = [], set()
    for node in kconf.node_iter():
        item = node.item
        if not isinstance(item, (Symbol, Choice)) or item.name is None or id(item) in seen:
            continue
        option = _option(kconf, item)
        if option is not None:
            seen.add(id(item))
            found.append(option)
    return found


def train_options(kconf):
    """The options that are flags of gpt2/train.py."""
    return [option for option in options(kconf) if option.train_flag]


def _option(kconf, item):
    if isinstance(item, Choice):
        what, values = "choice", tuple(choice_members(item))
    elif is_list(kconf, item):
        what, values = "list", tuple(list_members(kconf, item))
    elif has_prompt(item) and item.choice is None and not _is_list_member(kconf, item):
        what, values = kind(item), ()
    else:
        return None
    text = one_line(help_text(item))
    prompt = next((node.prompt[0] for node in item.nodes if node.prompt), None) or item.name
    return Option(item=item, kind=what, group=menu_title(item), prompt=prompt,
                  aliases=tuple(ALIAS.findall(text)), train_flag=not NOT_A_FLAG.search(text),
                  values=values)


def _is_list_member(kconf, sym):
    if sym.orig_type is not BOOL:
        return False
    parts = sym.name.split("_")
    for size in range(1, len(parts)):
        owner = kconf.syms.get("_".join(parts[:size]))
        if owner is not None and owner.nodes and is_list(kconf, owner):
            return True
    return False


def _parse_scalar(option, text):
    """bool, int, float, str: lib/kconfig.parse_value, the one type switch."""
    if option.kind == "bool":
        return text  # argparse's BooleanOptionalAction parses nothing
    try:
        return parse_value(option.item, text)
    except ConfigError as err:
        raise ValueError(str(err)) from None


def _parse_choice(option, text):
    if text not in option.values:
        raise ValueError(f"{text!r} is not one of: {', '.join(option.values)}")
    return text


def _parse_list(option, text):
    """'wandb,trackio' -> 'trackio,wandb' (Kconfig order, no repeats);
    'none' (or nothing) -> 'none'."""
    names = [part.strip().lower() for part in str(text).split(",") if part.strip()]
    usage = f"use {LIST_NONE}, or one or more of {', '.join(option.values)} joined by commas"
    if names in ([], [LIST_NONE]):
        return LIST_NONE
    unknown = [name for name in names if name not in option.values and name != LIST_NONE]
    if unknown or LIST_NONE in names:
        what = f"'{unknown[0]}' is unknown" if unknown else f"'{LIST_NONE}' cannot be combined with others"
        raise ValueError(f"{text!r}: {what}; {usage}")
    return ",".join(value for value in option.values if value in names)


_PARSERS = {"bool": _parse_scalar, "int": _parse_scalar, "float": _parse_scalar, "str": _parse_scalar,
            "choice": _parse_choice, "list": _parse_list}
