"""Values Kconfig derives rather than stores: named choices and lists.

A named choice (`choice OPTIMIZER`, entries OPTIMIZER_<VALUE>) has the value
of its selected entry's name; a list (a string symbol without prompt or
default, TRACKER) has the values of its bool members <NAME>_<VALUE> that are
on.  lib/kconfig.py checks .config lines against these, lib/options.py makes
them flags.
"""

from kconfiglib import BOOL, STRING
from lib.errors import UserError


class DerivedError(UserError):
    """A Kconfig tree whose choice entries do not follow the naming rule."""


def has_prompt(sym):
    return any(node.prompt for node in sym.nodes)

def choice_members(choice):
    """{value: member symbol} of a named choice.  A member's value is its name
    without the prefix every member shares with the choice's name, lowercase,
    '_' as '-': choice OPTIMIZER, OPTIMIZER_ADAMWSPAM -> "adamwspam";
    choice PRUNING_METHOD, PRUNING_NONE -> "none"; MODEL_GPT2_MEDIUM ->
    "gpt2-medium"."""
    parts = choice.name.split("_")
    for size in range(len(parts), 0, -1):
        prefix = "_".join(parts[:size]) + "_"
        if all(sym.name.startswith(prefix) for sym in choice.syms):
            return {sym.name[len(prefix):].lower().replace("_", "-"): sym for sym in choice.syms}
    raise DerivedError(f"choice {choice.name}: every member must be named {parts[0]}_<VALUE> "
                       "(fix the Kconfig file)")


def choice_value(choice):
    """The value of a named choice's selected member (None if none is)."""
    selected = choice.selection
    return next((value for value, sym in choice_members(choice).items() if sym is selected), None)


def is_list(kconf, sym):
    """A list option: a string symbol without prompt or default whose
    members are the bools named <SYMBOL>_<VALUE> (TRACKER: TRACKER_TRACKIO,
    TRACKER_WANDB).  Any number of members can be on at once."""
    return (sym.orig_type is STRING and not has_prompt(sym) and not sym.orig_defaults
            and bool(list_members(kconf, sym)))


def list_members(kconf, sym):
    """{value: bool symbol} of a list option, in Kconfig order."""
    prefix = sym.name + "_"
    return {member.name[len(prefix):].lower().replace("_", "-"): member
            for member in kconf.unique_defined_syms
            if member.name.startswith(prefix) and member.orig_type is BOOL and has_prompt(member)}


LIST_NONE = "none"


def list_value(kconf, sym, values=None):
    """The list's value: the members that are on, joined by commas, or
    "none".  `values` ({member name: bool}) overrides the current values."""
    on = [value for value, member in list_members(kconf, sym).items()
          if (values[member.name] if values is not None else member.tri_value == 2)]
    return ",".join(on) or LIST_NONE
