"""What a sweep is: a base preset, Kconfig options with lists of values, and
a seed count, expanded into runs, each with a real, strictly loaded .config.

A sweep file (`make sweep SWEEP=sweeps/optimizers.sweep`) holds one
assignment per line, `#` comments allowed:

    NAME=optimizers                     # optional; default: the file's name
    BASE=gpt2-tiny-shakespeare          # a preset (make list-defconfigs); default: Kconfig's defaults
    SEEDS=2                             # runs per point, seeds SEED, SEED+1, ...
    OPTIMIZER=adamw,adamwspam           # varied: one point per value
    MAX_ITERS=30                        # one value: set for every point

The command line says the same: `make sweep BASE=... VARY="OPTIMIZER=adamw,adamwspam
MAX_ITERS=30" SEEDS=2`.  Any option of the Kconfig tree can be named (with or
without CONFIG_), in the form its flag takes: adamwspam for OPTIMIZER, y or n
for a bool, "a,b" quoted when a string holds a comma.  Every value is checked
against its Kconfig type, range and choices, and every point's .config goes
through the same strict loader as `make train`, before anything trains.
"""

import csv
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

from lib.kconfig import ConfigError, dependencies_met, load_config, load_tree
from lib.kconfig_derived import choice_members
from lib.options import options
from scripts.configure import DEFCONFIGS, resolve_preset, set_list

SPECIAL = ("NAME", "BASE", "SEEDS")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class Sweep:
    """A parsed sweep: options to set (each with its values, in order)."""

    name: str
    base: str  # preset name, "" for Kconfig's defaults
    seeds: int
    grid: dict = field(default_factory=dict)  # option name -> [values as written]
    where: dict = field(default_factory=dict)  # option name -> "file:line" (for messages)
    source: str = "command line"

    @property
    def varied(self):
        """The options with more than one value: what tells points apart."""
        return [name for name, values in self.grid.items() if len(values) > 1]

    def points(self):
        """[{option: value}] for every combination of the grid, in order."""
        names = list(self.grid)
        return [dict(zip(names, values)) for values in itertools.product(*self.grid.values())]

    def label(self, point):
        """'optimizer=adamwspam' (the varied values), 'base' when nothing varies."""
        return ",".join(f"{name.lower()}={point[name]}" for name in self.varied) or "base"


def split_values(text, where):
    """'adamw,adamwspam' -> ['adamw', 'adamwspam']; a double-quoted value may
    hold commas ("a,b")."""
    try:
        values = next(csv.reader([text], skipinitialspace=True, strict=True))
    except (csv.Error, StopIteration):
        raise ConfigError(f"{where}: cannot read the values {text!r}; separate them with commas") from None
    values = [value.strip() for value in values]
    if not values or any(value == "" for value in values):
        raise ConfigError(f"{where}: an empty value in {text!r}; give one or more values separated by commas")
    return values


def _without_comment(line):
    """The line up to a '#' that is not inside double quotes."""
    quoted = False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == "#" and not quoted:
            return line[:index]
    return line


def _assignment(line, where):
    match = re.fullmatch(r"\s*(?:CONFIG_)?([A-Za-z0-9_]+)\s*=\s*(.*?)\s*", line)
    if match is None:
        raise ConfigError(f"{where}: expected NAME=value[,value...], not {line.strip()[:60]!r}")
    return match.group(1).upper(), match.group(2)


def parse_file(path):
    """The Sweep a sweep file describes."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such sweep file; see sweeps/*.sweep for examples") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read it ({err})") from None
    sweep = Sweep(name=path.stem, base="", seeds=1, source=str(path))
    for number, line in enumerate(text.splitlines(), 1):
        line = _without_comment(line)
        if line.strip():
            _add(sweep, *_assignment(line, f"{path}:{number}"), f"{path}:{number}")
    return sweep


def parse_command_line(base, vary, seeds, name):
    """The Sweep of `make sweep BASE=... VARY="A=x,y B=z" SEEDS=n NAME=...`."""
    sweep = Sweep(name="", base=base or "", seeds=1)
    for item in re.findall(r'(?:[^\s"]|"[^"]*")+', vary or ""):
        _add(sweep, *_assignment(item, "VARY"), "VARY")
    if seeds:
        _add(sweep, "SEEDS", str(seeds), "SEEDS")
    if not sweep.grid:
        raise ConfigError('VARY: nothing to sweep; e.g. VARY="OPTIMIZER=adamw,adamwspam"')
    sweep.name = name or "-".join([base or "defaults", *(n.lower() for n in sweep.varied or sweep.grid)])
    return sweep


def override(sweep, key, text, where):
    """Set NAME, BASE, SEEDS or an option's values of `sweep` from `text`."""
    _add(sweep, key, text, where)


def _add(sweep, key, text, where):
    if key == "NAME":
        sweep.name = text
    elif key == "BASE":
        sweep.base = text
    elif key == "SEEDS":
        if not text.isdigit() or int(text) < 1:
            raise ConfigError(f"{where}: SEEDS={text!r} must be a whole number of at least 1")
        sweep.seeds = int(text)
    else:
        if key in sweep.grid:
            raise ConfigError(f"{where}: {key} is set again (first at {sweep.where[key]}); keep one line")
        sweep.grid[key] = split_values(text, where)
        sweep.where[key] = where


def check(sweep):
    """Every name and value valid, before anything is written or trained."""
    if not _SAFE_NAME.match(sweep.name):
        raise ConfigError(f"sweep name {sweep.name!r}: use letters, digits, '.', '_' and '-' (NAME=...)")
    if sweep.base:
        resolve_preset(sweep.base)  # ConfigError naming `make list-defconfigs`
    known = {option.name: option for option in options(load_tree())}
    for key, values in sweep.grid.items():
        option = known.get(key)
        if option is None:
            raise ConfigError(f"{sweep.where[key]}: unknown option {key}; `make menuconfig` or .config.example "
                              "lists them")
        for value in values:
            _typed(option, value, sweep.where[key])


def _typed(option, value, where):
    if option.kind == "bool":
        if value not in ("y", "n"):
            raise ConfigError(f"{where}: {option.name}={value} is not a bool; use y or n")
        return value
    try:
        return option.parse(value)
    except ValueError as err:
        raise ConfigError(f"{where}: {option.name}={err}") from None


def point_config(sweep, point):
    """The Kconfig tree holding the base preset with `point` applied."""
    kconf = load_tree()
    if sweep.base:
        preset, tracker = resolve_preset(sweep.base)
        load_config(kconf, DEFCONFIGS / preset)
        if tracker:
            point = {"TRACKER": tracker, **point}
    known = {option.name: option for option in options(kconf)}
    for key, value in point.items():
        option, where = known[key], sweep.where.get(key, sweep.base)
        typed = _typed(option, value, where)
        if option.kind == "choice":
            choice_members(option.item)[typed].set_value(2)
        elif option.kind == "list":
            set_list(kconf, key, typed)
        else:
            option.item.set_value(value if option.kind != "str" else typed)
    for key in point:  # checked after all are set: a choice may switch a dependency on
        option = known[key]
        if option.kind not in ("choice", "list") and not dependencies_met(option.item):
            raise ConfigError(f"{sweep.where.get(key, key)}: {key} has no effect at this point of the sweep "
                              f"({sweep.label(point)}): it depends on {_dependency(option.item)}")
    return kconf


def _dependency(sym):
    import kconfiglib

    return kconfiglib.expr_str(sym.direct_dep)
