"""Strict loading of the Kconfig tree and `.config` files, and typed values.

kconfiglib is lenient by design: an unknown symbol, an invalid bool, an
unquoted string, a malformed line or an option set twice only produce a
warning (with file and line), after which the line is ignored.  A training
run configured by a typo is worse than no run, so here every warning of
kconfiglib's own loader is a `ConfigError`: one line naming the file, the
line and the fix.  Custom checks cover only what kconfiglib does not report
with a line: an int outside its range, two entries of one choice set to y,
and a value given to an option that nobody can set (derived ones).

Values are typed by each symbol's Kconfig type (`sym.orig_type`).  Kconfig
has no float type: a string option whose help starts with "A float in
[low, high)" (any of [ ] ( ) as bounds) holds a float, parsed and
range-checked here, once.  That sentence is the declaration; lib/options.py
derives train.py's flags from the same tree.
"""

import math
import os
import re
from pathlib import Path

import kconfiglib
from kconfiglib import BOOL, HEX, INT, MENU, STRING, expr_value

from lib.errors import UserError, one_line
from lib.kconfig_derived import (LIST_NONE, DerivedError, choice_members, choice_value, has_prompt,  # noqa: F401
                                 is_list, list_members, list_value)

REPO_ROOT = Path(__file__).resolve().parent.parent
TOP_KCONFIG = REPO_ROOT / "Kconfig"

# Kconfig `int` is decimal and `hex` is base 16 ("010" is a valid int, which
# int(s, 0) would reject).
INT_BASES = {INT: 10, HEX: 16}

# Python type of each kind of option (kind() below).
PYTHON_TYPES = {"bool": bool, "int": int, "float": float, "str": str}

# The float declaration in a string option's help: "A float in [0, 1)".
FLOAT_RANGE = re.compile(r"\bA float in ([\[(])\s*([^,\s]+)\s*,\s*([^\])\s]+)\s*([\])])")

# Symbols that earlier versions wrote into .config.  Their `is not set`
# lines are harmless and skipped; set to y they meant something that is now
# said another way, and the message says how.
REMOVED_SYMBOLS = {
    "TRACKER_NONE": "trackers are independent options now: leave every CONFIG_TRACKER_<NAME> unset",
    "TRACKER_TRACKIO_WANDB": "trackers are independent options now: set CONFIG_TRACKER_TRACKIO=y "
                             "and CONFIG_TRACKER_WANDB=y instead",
}

# Not `make menuconfig`: it loads .config just as strictly, so it refuses
# the same file.
FIX_HINT = "edit the line, or start over with `make defconfig-<name>`"
UNKNOWN_HINT = "remove or correct the line (.config.example lists every option)"

# kconfiglib's warnings about a .config line -> our message; group "where" is
# "file:line".  Each pattern is matched against the warning text.
_LOADER_WARNINGS = (
    (re.compile(r"^(?P<where>.+?:\d+): warning: attempt to assign the value '(?P<value>.*)' to the "
                r"undefined symbol (?P<name>\w+)$"),
     "{where}: unknown option CONFIG_{name}; " + UNKNOWN_HINT),
    (re.compile(r"^(?P<where>.+?:\d+): warning: '(?P<value>.*)' is not a valid value for the bool "
                r"symbol (?P<name>\w+)"),
     "{where}: CONFIG_{name}={value} is not a bool; use y or n"),
    (re.compile(r"^(?P<where>.+?:\d+): warning: '(?P<value>.*)' is not a valid value for the int "
                r"symbol (?P<name>\w+)"),
     "{where}: CONFIG_{name}={value} is not a decimal integer"),
    (re.compile(r"^(?P<where>.+?:\d+): warning: '(?P<value>.*)' is not a valid value for the hex "
                r"symbol (?P<name>\w+)"),
     "{where}: CONFIG_{name}={value} is not a hex number"),
    (re.compile(r"^(?P<where>.+?:\d+): warning: malformed string literal in assignment to (?P<name>\w+)"),
     "{where}: CONFIG_{name}{line}: a string must be one double-quoted value, e.g. "
     "CONFIG_{name}=\"...\" (escape \" and \\ with a backslash)"),
    (re.compile(r"^(?P<where>.+?:\d+): warning: ignoring malformed line '(?P<value>.*)'$"),
     "{where}: malformed line {short!r}; expected CONFIG_NAME=value or a '#' comment"),
    (re.compile(r"^(?P<where>.+?:(?P<line>\d+)): warning: (?P<name>\w+) \(defined at .*\) set more than once"),
     "{where}: CONFIG_{name} is set again (first on line {first}); keep one"),
    # Without a place: set_value() warns for ints; the line is looked up.
    (re.compile(r"^(?:warning: )?the value '(?P<value>.*)' is invalid for (?P<name>\w+) \(defined at .*\), "
                r"which has type int"),
     "{where}: CONFIG_{name}={value} is not a decimal integer"),
    (re.compile(r"^(?:warning: )?the value '(?P<value>.*)' is invalid for (?P<name>\w+) \(defined at .*\), "
                r"which has type hex"),
     "{where}: CONFIG_{name}={value} is not a hex number"),
)
# A string value: one double-quoted literal with backslash escapes, nothing after it.
_QUOTED = re.compile(r'"(?:[^\\"]|\\.)*"')


class ConfigError(UserError):
    """A configuration mistake a user can fix; str() is one line."""


def _parse_tree(kconfig):
    """kconfiglib.Kconfig with $srctree = the top file's folder: `source`
    paths are relative to it (as the kernel's C tools read them), so the tree
    loads from any working directory.  Only the constructor reads $srctree;
    the caller's environment is restored at once."""
    saved = os.environ.get("srctree")
    os.environ["srctree"] = str(Path(kconfig).resolve().parent)
    try:
        return kconfiglib.Kconfig(str(kconfig), warn_to_stderr=False)
    finally:
        if saved is None:
            del os.environ["srctree"]
        else:
            os.environ["srctree"] = saved


def load_tree(kconfig=TOP_KCONFIG):
    """Parse the Kconfig tree, with no .config: every symbol at its default.

    A syntax error, or any warning (a default outside its range, a type
    problem), is a ConfigError: the tree is ours, so it must be clean.
    """
    try:
        kconf = _parse_tree(kconfig)
    except kconfiglib.KconfigError as err:
        message = one_line(err).replace(": error: ", ": ", 1)
        where, colon, rest = message.partition(":")
        if colon and (Path(kconfig).resolve().parent / where).is_file():  # a fragment: name it in full
            message = f"{Path(kconfig).resolve().parent / where}:{rest}"
        raise ConfigError(f"{message} (fix the Kconfig file)") from None
    except OSError as err:
        raise ConfigError(f"cannot read the Kconfig tree: {one_line(err)}") from None
    kconf.warn_assign_undef = True  # unknown symbols in a .config: a warning, then an error here
    kconf.warn_assign_override = True  # an option set twice
    _evaluate_all(kconf)
    if kconf.warnings:
        raise ConfigError(f"{_warning_text(kconf.warnings[0])} (fix the Kconfig file)")
    for choice in kconf.unique_choices:  # every named choice's entries follow the naming rule
        try:
            if choice.name:
                choice_members(choice)
        except DerivedError as err:
            raise ConfigError(str(err)) from None
    for sym in kconf.unique_defined_syms:  # every float default parses and is in range
        if is_float(sym) and sym.orig_defaults:
            try:
                default_value(sym)
            except ConfigError as err:
                raise ConfigError(f"{Path(kconf.srctree, sym.nodes[0].filename)}:{sym.nodes[0].linenr}: default of {err} "
                                  "(fix the Kconfig file)") from None
    return kconf


def load_config(kconf, path):
    """Load `path` into `kconf`, refusing anything kconfiglib would let slide.

    Symbols the file does not set keep their defaults (olddefconfig
    semantics).  Raises ConfigError, one line, naming `path` and the line.
    """
    path = Path(path)
    lines = _assignment_lines(path)
    kconf.warnings.clear()
    kconf.missing_syms.clear()
    kconf.load_config(str(path))
    for warning in kconf.warnings:
        _raise_loader_warning(kconf, warning, lines, path)
    kconf.warnings.clear()  # those left were harmless (old derived lines, judged below)
    _check_strings(kconf, path, lines)
    _check_choices(kconf, path, lines)
    _evaluate_all(kconf)  # int range checks only run when a value is read
    _check_ranges(kconf, path, lines)
    _check_underived(kconf, path, lines)
    if kconf.warnings:
        raise ConfigError(f"{path}: {_warning_text(kconf.warnings[0])}; {FIX_HINT}")
    for sym in kconf.unique_defined_syms:
        if is_float(sym) and dependencies_met(sym):
            try:
                typed_value(sym)
            except ConfigError as err:
                where = f"{path}:{lines[sym.name][-1][0]}" if sym.name in lines else f"{path} (default)"
                raise ConfigError(f"{where}: {err}; {FIX_HINT}") from None


def read_config(path, kconfig=TOP_KCONFIG):
    """The Kconfig tree with `path` strictly loaded into it."""
    kconf = load_tree(kconfig)
    load_config(kconf, path)
    return kconf


def dependencies_met(sym):
    """True when the symbol's `depends on` (and enclosing menus/ifs) hold."""
    return expr_value(sym.direct_dep) > 0


def help_text(item):
    """The help of a symbol or choice (its first definition that has one)."""
    return next((node.help for node in item.nodes if node.help), "") or ""


def float_range(sym):
    """(low, high, low_inclusive, high_inclusive) of a float option, from its
    help ("A float in [0, 1)"); None for every other symbol."""
    if sym.orig_type is not STRING:
        return None
    match = FLOAT_RANGE.search(one_line(help_text(sym)))
    if match is None:
        return None
    opening, low, high, closing = match.groups()
    return float(low), float(high), opening == "[", closing == "]"


def is_float(sym):
    return float_range(sym) is not None


def kind(sym):
    """The one switch on an option's type: "bool", "int" (Kconfig int or
    hex), "float" (a string declared "A float in [low, high)") or "str".
    Everything that types a value (parse_value, python_type, lib/options.py's
    flags, scripts/genconfig.py's config.py) goes through it."""
    if sym.orig_type is BOOL:
        return "bool"
    if sym.orig_type in INT_BASES:
        return "int"
    return "float" if is_float(sym) else "str"


def python_type(sym):
    """The Python type of the symbol's values: bool, int, float or str."""
    return PYTHON_TYPES[kind(sym)]


def parse_value(sym, text):
    """The typed value of `text`, the symbol's value as .config or a command
    line spells it ("y", "12", "0x1f", "1e-3", any string); ints and floats
    are range-checked.  ConfigError, one line, when it is not valid."""
    what = kind(sym)
    if what == "bool":
        if text not in ("y", "n"):
            raise ConfigError(f"{sym.name}={text!r} is not a bool; use y or n")
        return text == "y"
    if what == "float":
        return parse_float(sym, text)
    if what == "str":
        return text
    try:
        value = int(text, INT_BASES[sym.orig_type])
    except ValueError:
        raise ConfigError(f"{text!r} is not an integer") from None
    bounds = int_range(sym)
    if bounds and not bounds[0] <= value <= bounds[1]:
        raise ConfigError(f"{value} is outside [{bounds[0]}, {bounds[1]}]")
    return value


def typed_value(sym):
    """The symbol's current value as a Python value, None if its
    dependencies are unmet.  Floats are range-checked."""
    if not dependencies_met(sym):
        return None
    return parse_value(sym, "y" if sym.orig_type is BOOL and sym.tri_value == 2 else sym.str_value)


def default_value(sym):
    """The value train.py's parser uses when no flag is given.

    A symbol whose dependencies are met at the defaults gets its current
    value.  One whose dependencies are unmet (SGD_MOMENTUM while AdamW is
    selected) gets the default written in Kconfig, ignoring the dependency,
    so `train.py --optimizer sgd` still has a usable momentum.
    """
    if dependencies_met(sym):
        return typed_value(sym)
    for value, cond in sym.orig_defaults:
        if expr_value(cond):
            text = ("y" if expr_value(value) == 2 else "n") if sym.orig_type is BOOL else value.str_value
            return parse_value(sym, text)
    return False if sym.orig_type is BOOL else None


def int_range(sym):
    """(low, high) of an int/hex symbol's first active `range`, ignoring the
    symbol's own dependencies; None when it has no range."""
    base = INT_BASES.get(sym.orig_type)
    if base is None:
        return None
    for low, high, cond in sym.orig_ranges:
        if expr_value(cond):
            return int(low.str_value, base), int(high.str_value, base)
    return None


def parse_float(sym, text):
    """Parse the float option `sym` from its string and check its range."""
    low, high, low_inclusive, high_inclusive = float_range(sym)
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{sym.name}={text!r} is not a number (e.g. \"1e-3\")") from None
    above = value >= low if low_inclusive else value > low
    below = value <= high if high_inclusive else value < high
    if not (above and below and math.isfinite(value)):
        opening, closing = "[" if low_inclusive else "(", "]" if high_inclusive else ")"
        raise ConfigError(f"{sym.name}={text!r} is outside {opening}{low:g}, {high:g}{closing}")
    return value


def menu_title(item):
    """Title of the innermost menu holding a symbol's or choice's first definition."""
    node = item.nodes[0].parent
    while node is not None and node.item is not MENU:
        node = node.parent
    return node.prompt[0] if node is not None and node.prompt else "Top level"


def _evaluate_all(kconf):
    for sym in kconf.unique_defined_syms:
        sym.str_value  # noqa: B018 -- reading a value runs kconfiglib's checks


def _warning_text(warning):
    return one_line(warning.replace("warning: ", "", 1))


def _assignment_lines(path):
    """{symbol name: [(line number, line)]} of the CONFIG_ lines of `path`
    (set or "is not set"), for messages kconfiglib gives without a line.
    Reading the file first also turns a missing or unreadable file into one
    line."""
    try:
        with path.open(encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file; create it with `make defconfig-<name>` "
            "(see `make list-defconfigs`), `make olddefconfig` or `make menuconfig`") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({one_line(err)}); save it as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it: {one_line(err)}") from None
    lines = {}
    # Split as kconfiglib does: str.splitlines would also split at U+2028.
    for number, line in enumerate(text.split("\n"), 1):
        match = re.match(r"(?:# )?CONFIG_(\w+)(=| is not set$)", line)
        if match:
            lines.setdefault(match.group(1), []).append((number, line.rstrip("\r")))
    return lines


def _raise_loader_warning(kconf, warning, lines, path):
    """Turn one of kconfiglib's .config warnings into our ConfigError."""
    for pattern, message in _LOADER_WARNINGS:
        match = pattern.match(warning)
        if match is None:
            continue
        fields = match.groupdict()
        name = fields.get("name", "")
        if "undefined symbol" in warning:
            if name in kconf.named_choices:
                return  # an older version's derived line: _check_underived judges it
            if name in REMOVED_SYMBOLS:
                if fields["value"] == "n":
                    return  # an old "is not set" line: nothing to do
                raise ConfigError(f"{fields['where']}: CONFIG_{name} no longer exists; {REMOVED_SYMBOLS[name]}")
        entries = lines.get(name, [])
        if "where" not in fields:  # the last assignment is the one kconfiglib kept
            fields["where"] = f"{path}:{entries[-1][0]}" if entries else str(path)
        where_line = int(fields["where"].rsplit(":", 1)[1]) if entries else 0
        text = next((text for number, text in entries if number == where_line), "")
        raise ConfigError(message.format(
            where=fields["where"], name=name, value=fields.get("value", ""),
            first=entries[0][0] if entries else where_line,
            line=text[len(f"CONFIG_{name}"):], short=fields.get("value", "").strip()[:60]))
    raise ConfigError(f"{_warning_text(warning)}; {FIX_HINT}")


def _check_strings(kconf, path, lines):
    """kconfiglib reads the first quoted literal of a string line and ignores
    what follows it ("da"ta" is "da"); refuse such a line."""
    for name, entries in lines.items():
        sym = kconf.syms.get(name)
        if sym is None or sym.orig_type is not STRING:
            continue
        for number, text in entries:
            value = text.split("=", 1)[1] if "=" in text else None
            if value is not None and not _QUOTED.fullmatch(value):
                raise ConfigError(
                    f"{path}:{number}: CONFIG_{name}={value}: a string must be one double-quoted value, "
                    f"e.g. CONFIG_{name}=\"...\" (escape \" and \\ with a backslash)")


def _check_choices(kconf, path, lines):
    """kconfiglib quietly takes the last of two entries of one choice set to y."""
    for choice in kconf.unique_choices:
        chosen = [(number, sym.name) for sym in choice.syms
                  for number, text in lines.get(sym.name, []) if text == f"CONFIG_{sym.name}=y"]
        if len(chosen) > 1:
            (first_line, first), (line, name) = sorted(chosen)[:2]
            raise ConfigError(f"{path}:{line}: CONFIG_{name}=y but CONFIG_{first}=y (line {first_line}) "
                              "is in the same choice; keep one")


def _check_ranges(kconf, path, lines):
    """kconfiglib replaces an out-of-range int by its default with only a
    warning that lacks the line; report it with the line and the range."""
    for name, entries in lines.items():
        sym = kconf.syms.get(name)
        if sym is None or sym.orig_type not in INT_BASES or sym.user_value is None or not sym.visibility:
            continue
        base = INT_BASES[sym.orig_type]
        active = [(low, high) for low, high, cond in sym.ranges if expr_value(cond)]
        if not active:
            continue
        low, high = (int(bound.str_value, base) for bound in active[0])
        if not low <= int(sym.user_value, base) <= high:
            kconf.warnings.clear()  # kconfiglib's own line-less warning about the same value
            raise ConfigError(
                f"{path}:{entries[-1][0]}: CONFIG_{name}={sym.user_value} is outside "
                f"[{low}, {high}]; use a value in that range")


def _check_underived(kconf, path, lines):
    """Derived values (a named choice such as OPTIMIZER, a list such as
    TRACKER) cannot be set, and kconfiglib silently ignores a .config value
    for them.  Older versions wrote them: accept a value that agrees, refuse
    one that does not, since whoever wrote it expected it to take effect."""
    for name, entries in lines.items():
        number, text = entries[0]
        if not text.startswith(f"CONFIG_{name}="):
            continue
        sym, choice = kconf.syms.get(name), kconf.named_choices.get(name)
        if choice is not None:
            derived = choice_value(choice)
            member = choice_members(choice).get(_unquote(text.split("=", 1)[1]))
            fix = f"select CONFIG_{member.name}=y instead" if member else "remove the line"
        elif sym is not None and is_list(kconf, sym):
            derived, fix = list_value(kconf, sym), f"set the CONFIG_{name}_<NAME> options instead"
        else:
            continue
        given = _unquote(text.split("=", 1)[1])
        if given != derived:
            raise ConfigError(
                f"{path}:{number}: CONFIG_{name}={given!r} disagrees with the choice that sets "
                f"{name} ({derived!r}); {fix}")


def _unquote(value):
    """The string of a .config string literal, or None if it is not one."""
    match = re.fullmatch(r'"((?:[^\\"]|\\.)*)"', value.strip())
    return re.sub(r"\\(.)", r"\1", match.group(1)) if match else None
