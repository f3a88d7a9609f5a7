"""Strict loading of the Kconfig tree and `.config` files, and typed values.

kconfiglib is lenient by design: an unknown symbol, an out-of-range int, an
invalid bool or an unquoted string only produce a warning, after which the
symbol silently falls back to its default; a line it cannot parse may be
skipped.  A training run configured by a typo is worse than no run, so here
every such case is a `ConfigError` whose message is one line naming the file,
the line or symbol, and the fix.

Values are typed by each symbol's Kconfig type (`sym.orig_type`), never by
its name; string symbols listed in gpt2/options.py FLOATS hold floats and are
parsed and range-checked here, once.

Used by scripts/genconfig.py (.config -> build outputs), scripts/configure.py
(defconfig, olddefconfig, savedefconfig, ...) and gpt2/cli.py (train.py's
parser: defaults and help straight from Kconfig).
"""

import contextlib
import math
import re
from pathlib import Path

import kconfiglib
from kconfiglib import BOOL, HEX, INT, MENU, STRING, expr_value

from gpt2.options import FLOATS

REPO_ROOT = Path(__file__).resolve().parent.parent
TOP_KCONFIG = REPO_ROOT / "Kconfig"

# Kconfig `int` is decimal and `hex` is base 16 ("010" is a valid int, which
# int(s, 0) would reject).
INT_BASES = {INT: 10, HEX: 16}

# Python type of each Kconfig type (floats are strings listed in FLOATS).
PYTHON_TYPES = {BOOL: bool, INT: int, HEX: int, STRING: str}

# Lines of a .config: an assignment, or a comment ("# CONFIG_X is not set"
# is a comment that kconfiglib also reads as "n").
_ASSIGNMENT = re.compile(r"CONFIG_([A-Za-z0-9_]+)=(.*)")
_NOT_SET = re.compile(r"# CONFIG_([A-Za-z0-9_]+) is not set")
# A double-quoted string with backslash escapes, and nothing after it.
_QUOTED = re.compile(r'"(?:[^\\"]|\\.)*"')

# Not `make menuconfig`: it loads .config just as strictly, so it refuses
# the same file.
FIX_HINT = "edit the line, or start over with `make defconfig-<name>`"
UNKNOWN_HINT = "remove or correct the line (.config.example lists every option)"


class ConfigError(Exception):
    """A configuration mistake a user can fix; str() is one line."""


def one_line(text):
    """Collapse whitespace so a message always fits on one line."""
    return " ".join(str(text).split())


def load_tree(kconfig=TOP_KCONFIG):
    """Parse the Kconfig tree, with no .config: every symbol at its default.

    A syntax error, or any warning (a default outside its range, a type
    problem), is a ConfigError: the tree is ours, so it must be clean.
    """
    try:
        kconf = kconfiglib.Kconfig(str(kconfig), warn_to_stderr=False)
    except kconfiglib.KconfigError as err:
        message = one_line(err).replace(": error: ", ": ", 1)
        raise ConfigError(f"{message} (fix the Kconfig file)") from None
    except OSError as err:
        raise ConfigError(f"cannot read the Kconfig tree: {one_line(err)}") from None
    kconf.warn_assign_undef = True  # unknown symbols in a .config warn, then raise
    _evaluate_all(kconf)
    if kconf.warnings:
        raise ConfigError(f"{_warning_text(kconf.warnings[0])} (fix the Kconfig file)")
    return kconf


def load_config(kconf, path):
    """Load `path` into `kconf`, refusing anything kconfiglib would let slide.

    Symbols the file does not set keep their defaults (olddefconfig
    semantics).  Raises ConfigError, one line, naming `path` and the line.
    """
    path = Path(path)
    lines = _check_lines(kconf, path)
    kconf.warnings.clear()
    kconf.missing_syms.clear()
    kconf.load_config(str(path))
    _evaluate_all(kconf)  # int range checks only run when a value is read
    if kconf.missing_syms:  # already reported by _check_lines; kept as a safety net
        name, _ = kconf.missing_syms[0]
        raise ConfigError(f"{path}: unknown option CONFIG_{name}; {UNKNOWN_HINT}")
    _check_ranges(kconf, path, lines)
    _check_derived(kconf, path, lines)
    if kconf.warnings:
        raise ConfigError(f"{path}: {_warning_text(kconf.warnings[0])}; {FIX_HINT}")
    for name in FLOATS:
        sym = kconf.syms.get(name)
        if sym is not None and sym.nodes and dependencies_met(sym):
            try:
                typed_value(sym)
            except ConfigError as err:
                where = f"{path}:{lines[name]}" if name in lines else f"{path} (default)"
                raise ConfigError(f"{where}: {err}; {FIX_HINT}") from None


def read_config(path, kconfig=TOP_KCONFIG):
    """The Kconfig tree with `path` strictly loaded into it."""
    kconf = load_tree(kconfig)
    load_config(kconf, path)
    return kconf


def dependencies_met(sym):
    """True when the symbol's `depends on` (and enclosing menus/ifs) hold."""
    return expr_value(sym.direct_dep) > 0


def typed_value(sym):
    """The symbol's current value as a Python value, None if its
    dependencies are unmet.  Floats are checked against FLOATS."""
    if not dependencies_met(sym):
        return None
    if sym.orig_type is BOOL:
        return sym.tri_value == 2
    return _typed(sym, sym.str_value)


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
            return expr_value(value) == 2 if sym.orig_type is BOOL else _typed(sym, value.str_value)
    return None


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


def parse_float(name, text):
    """Parse the float option `name` from its string and check its range."""
    low, high, low_inclusive, high_inclusive = FLOATS[name]
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number (e.g. \"1e-3\")") from None
    above = value >= low if low_inclusive else value > low
    below = value <= high if high_inclusive else value < high
    if not (above and below and math.isfinite(value)):
        opening, closing = "[" if low_inclusive else "(", "]" if high_inclusive else ")"
        raise ConfigError(f"{name}={text!r} is outside {opening}{low:g}, {high:g}{closing}")
    return value


def menu_title(sym):
    """Title of the innermost menu holding the symbol's first definition."""
    node = sym.nodes[0].parent
    while node is not None and node.item is not MENU:
        node = node.parent
    return node.prompt[0] if node is not None and node.prompt else "Top level"


def python_type(sym):
    """The Python type of the symbol's values: bool, int, float or str."""
    if sym.orig_type is STRING and sym.name in FLOATS:
        return float
    return PYTHON_TYPES[sym.orig_type]


def choice_values(kconf):
    """{hidden symbol name: {value: choice member}} for every choice.

    Found by evaluation, not by reading names or defaults: each member of
    each choice is selected in turn and a hidden (prompt-less) string symbol
    that takes a different value for every member is the one the choice
    feeds (the Linux idiom: choice OPTIMIZER_* feeds string OPTIMIZER).
    Every selection is restored afterwards.
    """
    hidden = [sym for sym in kconf.unique_defined_syms
              if sym.orig_type is STRING and not any(node.prompt for node in sym.nodes)]
    feeds = {}
    for choice in kconf.unique_choices:
        with _selection_restored(choice):
            seen = {sym.name: {} for sym in hidden}
            for member in choice.syms:
                member.set_value(2)
                for sym in hidden:
                    seen[sym.name][sym.str_value] = member
        for name, values in seen.items():
            if len(values) == len(choice.syms) > 1:
                feeds[name] = values
    return feeds


def match_choice_value(values, request):
    """The entry of `values` equal to `request`, where a comma-separated list
    matches in any order ("wandb,trackio" -> "trackio,wandb"); else None."""
    wanted = sorted(part.strip() for part in request.split(","))
    for value in values:
        if sorted(value.split(",")) == wanted:
            return value
    return None


def select_choice_value(kconf, hidden_name, request):
    """Select the choice entry whose hidden symbol `hidden_name` evaluates to
    `request` (e.g. TRACKER=wandb); ConfigError listing the valid values."""
    values = choice_values(kconf).get(hidden_name, {})
    value = match_choice_value(values, request)
    if value is None:
        valid = ", ".join(values)
        raise ConfigError(f"{hidden_name}={request!r} is not one of: {valid}")
    values[value].set_value(2)
    return value


@contextlib.contextmanager
def _selection_restored(choice):
    """Put back a choice's user selection and its members' user values."""
    members = [(member, member.user_value) for member in choice.syms]
    mode, selection = choice.user_value, choice.user_selection
    try:
        yield
    finally:
        choice.unset_value()
        for member, value in members:
            if value is None:
                member.unset_value()
            else:
                member.set_value(value)
        if mode is not None:
            choice.set_value(mode)
        if selection is not None:
            selection.set_value(2)


def _typed(sym, text):
    """Convert a string value of `sym` (never a bool) to its Python type."""
    if sym.orig_type in INT_BASES:
        return int(text, INT_BASES[sym.orig_type])
    if sym.name in FLOATS:
        return parse_float(sym.name, text)
    return text


def _evaluate_all(kconf):
    for sym in kconf.unique_defined_syms:
        sym.str_value  # noqa: B018 -- reading a value runs kconfiglib's checks


def _warning_text(warning):
    return one_line(warning.replace("warning: ", "", 1))


def _check_lines(kconf, path):
    """Check every line of `path` the way kconfiglib should; return
    {symbol name: line number} of the assignments."""
    try:
        # Read as kconfiglib does: only \n, \r\n and \r end a line (str.splitlines
        # would also split at U+2028 or U+0085 inside a string value).
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
    lines, selected = {}, {}
    for number, line in enumerate(text.split("\n"), 1):
        where = f"{path}:{number}"
        match = _ASSIGNMENT.fullmatch(line.rstrip()) or _NOT_SET.fullmatch(line.rstrip())
        if match is None:
            if line.strip() and not line.lstrip().startswith("#"):
                raise ConfigError(
                    f"{where}: malformed line {line.strip()[:60]!r}; expected "
                    "CONFIG_NAME=value or a '#' comment")
            continue
        name = match.group(1)
        sym = kconf.syms.get(name)
        if sym is None or not sym.nodes:
            raise ConfigError(
                f"{where}: unknown option CONFIG_{name}; {UNKNOWN_HINT}")
        if name in lines:
            raise ConfigError(
                f"{where}: CONFIG_{name} is set again (first on line {lines[name]}); keep one")
        lines[name] = number
        if match.re is _ASSIGNMENT:
            _check_assignment(sym, match.group(2), where)
            if sym.choice is not None and match.group(2) == "y":
                other = selected.setdefault(id(sym.choice), (name, number))
                if other[0] != name:
                    raise ConfigError(
                        f"{where}: CONFIG_{name}=y but CONFIG_{other[0]}=y (line {other[1]}) "
                        "is in the same choice; keep one")
    return lines


def _check_assignment(sym, value, where):
    """One value against its symbol's type, with a message that says the fix."""
    assignment = f"CONFIG_{sym.name}={value}"
    if sym.orig_type is BOOL and value not in ("y", "n"):
        raise ConfigError(f"{where}: {assignment} is not a bool; use y or n")
    if sym.orig_type in INT_BASES:
        base = INT_BASES[sym.orig_type]
        try:
            int(value, base)
        except ValueError:
            kind = "decimal integer" if base == 10 else "hex number"
            raise ConfigError(f"{where}: {assignment} is not a {kind}") from None
    if sym.orig_type is STRING and not _QUOTED.fullmatch(value):
        raise ConfigError(
            f"{where}: {assignment}: a string must be one double-quoted value, "
            f"e.g. CONFIG_{sym.name}=\"...\" (escape \" and \\ with a backslash)")


def _check_ranges(kconf, path, lines):
    """kconfiglib replaces an out-of-range int by its default with only a
    warning that lacks the line; report it with the line and the range."""
    for name, number in lines.items():
        sym = kconf.syms[name]
        if sym.orig_type not in INT_BASES or sym.user_value is None or not sym.visibility:
            continue
        base = INT_BASES[sym.orig_type]
        active = [(low, high) for low, high, cond in sym.ranges if expr_value(cond)]
        if not active:
            continue
        low, high = (int(bound.str_value, base) for bound in active[0])
        if not low <= int(sym.user_value, base) <= high:
            raise ConfigError(
                f"{path}:{number}: CONFIG_{name}={sym.user_value} is outside "
                f"[{low}, {high}]; use a value in that range")


def _check_derived(kconf, path, lines):
    """A prompt-less symbol (MODEL, TRACKER, ...) follows its choice, and
    kconfiglib silently ignores a .config value for it; refuse one that
    disagrees, since whoever wrote it expected it to take effect."""
    for name, number in lines.items():
        sym = kconf.syms[name]
        if any(node.prompt for node in sym.nodes) or sym.orig_type is BOOL \
                or sym.user_value is None or sym.user_value == sym.str_value:
            continue
        member = choice_values(kconf).get(name, {}).get(sym.user_value)
        fix = f"select CONFIG_{member.name}=y instead" if member else "remove the line"
        raise ConfigError(
            f"{path}:{number}: CONFIG_{name}={sym.user_value!r} disagrees with the choice that "
            f"sets {name} ({sym.str_value!r}); {fix}")
