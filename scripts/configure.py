"""Create and inspect .config: the kconfig tools behind `make <command>`.

  defconfig NAME [--tracker T]  gpt2/defconfigs/NAME (or NAME-TRACKER), the rest at defaults -> .config
  olddefconfig                  .config (or nothing), new options at defaults -> .config
  savedefconfig                 .config -> ./defconfig, only what differs from the defaults
  listnewconfig                 the options .config does not set yet
  list-defconfigs               the presets, each with its description
  menuconfig                    kconfiglib's terminal menu over .config
  example                       .config.example: every option at its default, with comments

Every command that writes .config also regenerates build/config.py and
build/train.args (scripts/genconfig.py), so they always match it.  Files are
loaded strictly (lib/kconfig.py): a mistake in one stops with one line saying
where and how to fix it, before anything is written.  A write that fails (an
unwritable --build-dir, a full disk) also stops with one line, but .config may
already be replaced; `make` regenerates build/ from it once the cause is fixed.
"""

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
import kconfiglib
from lib.atomic import replaced_atomically, write_text_atomically
from lib.kconfig import (REPO_ROOT, ConfigError, default_value, dependencies_met, list_members, load_config,
                         load_tree, one_line, read_config)
from lib.options import options
from scripts.genconfig import generate

DEFCONFIGS = REPO_ROOT / "gpt2" / "defconfigs"
HEADER = "# gpt2lab configuration: edit with `make menuconfig`, or start over from a preset\n" \
         "# with `make defconfig-<name>` (`make list-defconfigs` lists them).\n"
NO_CONFIG_NOTICE = ("no {config}: using the defaults — tiny GPT-2 on Tiny Shakespeare, "
                    "tracked in Trackio; `make menuconfig` to change")


def presets():
    """{preset name: description (its first comment line)} in name order."""
    found = {}
    for path in sorted(DEFCONFIGS.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            first = (path.read_text(encoding="utf-8").splitlines() or [""])[0]
            found[path.name] = first.lstrip("#").strip() if first.startswith("#") else ""
    return found


def write_config(kconf, args):
    """Write .config atomically, then regenerate the build outputs from it
    (unless --config-only: make's .config rule leaves them to their own rule)."""
    with replaced_atomically(args.config) as tmp:
        kconf.write_config(tmp, header=HEADER, save_old=False)
    if args.config_only:
        return f"{args.config} written"
    outputs = generate(args.config, args.build_dir)
    return f"{args.config} written; {', '.join(str(path) for path in outputs)} regenerated"


def set_list(kconf, name, text):
    """Switch the members of list option `name` (TRACKER) to `text`
    ("trackio,wandb", "none"); returns the value as the flag reads it."""
    option = next(option for option in options(kconf) if option.name == name)
    try:
        value = option.parse(text)
    except ValueError as err:
        raise ConfigError(f"{name}={err}") from None
    chosen = value.split(",")
    for member_value, member in list_members(kconf, option.item).items():
        member.set_value(2 if member_value in chosen else 0)
    return value


def resolve_preset(name):
    """(preset file name, tracker or "") for `name`: a preset in
    gpt2/defconfigs, or <preset>-<tracker list> (gpt2-wandb: the gpt2 preset
    with TRACKER=wandb)."""
    if name in presets():
        return name, ""
    base, _, tracker = name.rpartition("-")
    if base in presets() and tracker:
        return base, tracker
    raise ConfigError(f"no preset {name!r} in gpt2/defconfigs; `make list-defconfigs` lists them")


def defconfig(args):
    """.config from a preset in gpt2/defconfigs, everything else at its default."""
    preset, tracker = resolve_preset(args.name)
    kconf = load_tree()
    load_config(kconf, DEFCONFIGS / preset)
    tracker = args.tracker or tracker
    note = f" (tracker: {set_list(kconf, 'TRACKER', tracker)})" if tracker else ""
    print(f"preset {preset}{note}: {write_config(kconf, args)}")


def olddefconfig(args):
    """Rewrite .config with new options at their defaults (all of them, with no .config)."""
    if Path(args.config).exists():
        kconf = read_config(args.config)
    else:
        print(NO_CONFIG_NOTICE.format(config=args.config))
        kconf = load_tree()
    print(write_config(kconf, args))


def savedefconfig(args):
    """Write the options of .config that differ from the defaults (a preset's format)."""
    kconf = read_config(args.config)
    with replaced_atomically(args.out) as tmp:
        kconf.write_min_config(tmp)
    print(f"{args.out}: the options of {args.config} that differ from the defaults")


def listnewconfig(args):
    """Print the options .config does not set, at their defaults: .config is
    checked strictly here, then kconfiglib's own listnewconfig lists them."""
    read_config(args.config)
    result = subprocess.run([sys.executable, "-m", "listnewconfig", str(REPO_ROOT / "Kconfig")],
                            env=dict(os.environ, KCONFIG_CONFIG=str(args.config)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise ConfigError(f"kconfiglib's listnewconfig failed: {one_line(result.stderr)}")
    print(result.stdout, end="")


EXAMPLE_HEADER = """\
# gpt2lab: a complete example .config, every option at its default (the tiny
# GPT-2 on Tiny Shakespeare, tracked in Trackio).  Generated from the Kconfig
# tree by `make example-config`; do not edit.  Copy it to .config and edit it,
# or let `make menuconfig` (help on every option) or `make defconfig-<name>`
# write .config for you.  Each option's comment names its gpt2/train.py flag;
# an option whose dependency is not met ("used when ...") is ignored.  Floats
# are quoted strings (Kconfig has no float type).
"""


def example_config(kconf):
    """The text of .config.example: every option of the tree at its default,
    under its menu's title, with its prompt and flag as a comment."""
    out, menu = [EXAMPLE_HEADER], None
    for option in options(kconf):
        if option.group != menu:
            menu = option.group
            out.append(f"\n# --- {menu} ---\n")
        flag = f"{option.flag}, " if option.train_flag else ""
        note = f" ({flag}Kconfig {option.name})"
        if option.kind == "list":
            out.append(f"# {option.flag} (Kconfig {option.name}): the {option.name}_<NAME> options "
                       "below that are y, joined by commas (none when all are off)\n")
        elif option.kind == "choice":
            out.append(f"# {option.prompt}{note}: one of the following is y\n")
            out.extend(_assignment(sym, sym is option.item.selection) for sym in option.item.syms)
        else:
            sym = option.item
            used_when = "" if dependencies_met(sym) else f" (used when {kconfiglib.expr_str(sym.direct_dep)})"
            out.append(f"# {option.prompt}{note}{used_when}\n")
            out.append(_assignment(sym, default_value(sym)))
        out.extend(_list_members(kconf, option))
    return "".join(out)


def _list_members(kconf, option):
    if option.kind != "list":
        return []
    lines = []
    for sym in list_members(kconf, option.item).values():
        prompt = next(node.prompt[0] for node in sym.nodes if node.prompt)
        lines += [f"# {prompt} (Kconfig {sym.name})\n", _assignment(sym, default_value(sym))]
    return lines


def _assignment(sym, value):
    """One .config line for `sym` holding `value` (a Python value)."""
    if sym.orig_type is kconfiglib.BOOL:
        return f"CONFIG_{sym.name}=y\n" if value else f"# CONFIG_{sym.name} is not set\n"
    if sym.orig_type is kconfiglib.STRING:
        return f'CONFIG_{sym.name}="{kconfiglib.escape(_default_text(sym))}"\n'
    return f"CONFIG_{sym.name}={value}\n"


def _default_text(sym):
    """A string symbol's default as written in Kconfig (floats keep "1e-3")."""
    for value, cond in sym.orig_defaults:
        if kconfiglib.expr_value(cond):
            return value.str_value
    return ""


def example(args):
    """Write .config.example: every option at its default, with comments."""
    write_text_atomically(args.out, example_config(load_tree()))
    print(f"{args.out}: every option at its default, from the Kconfig tree")


def list_defconfigs(args):
    """Print the presets with the first comment line of each."""
    print("Presets (`make defconfig-<name> [TRACKER=none|trackio|wandb|trackio,wandb]`;"
          " `<name>-<tracker>` works too, e.g. gpt2-wandb):")
    for name, description in presets().items():
        print(f"  {name:<24} {description}")


def exit_when_terminal_closes(fd, interval=0.5):
    """End this process once its terminal is gone (window closed, ssh
    dropped).  Under `make menuconfig` the hangup reaches make, the session
    leader, not the menu, and kconfiglib's menu then polls the dead terminal
    at 100% CPU forever.  Nothing is lost: the menu writes .config only when
    told to save."""

    def watch():
        while True:
            time.sleep(interval)
            try:
                os.tcgetpgrp(fd)  # EIO once the terminal has hung up
            except OSError:
                os._exit(128 + signal.SIGHUP)  # as if the hangup had reached us

    if os.isatty(fd):
        threading.Thread(target=watch, name="terminal-watch", daemon=True).start()


def menuconfig(args):
    """Edit .config in kconfiglib's terminal menu, then regenerate the outputs."""
    # Imported here: only the menu needs curses.
    import menuconfig as kconfiglib_menuconfig

    kconf = read_config(args.config) if Path(args.config).exists() else load_tree()
    os.environ["KCONFIG_CONFIG"] = str(args.config)  # where kconfiglib's menu loads and saves
    exit_when_terminal_closes(sys.stdin.fileno())
    kconfiglib_menuconfig.menuconfig(kconf)
    if Path(args.config).exists():
        print(f"{', '.join(str(path) for path in generate(args.config, args.build_dir))} "
              f"regenerated from {args.config}")


COMMANDS = {
    "defconfig": defconfig,
    "olddefconfig": olddefconfig,
    "savedefconfig": savedefconfig,
    "listnewconfig": listnewconfig,
    "list-defconfigs": list_defconfigs,
    "menuconfig": menuconfig,
    "example": example,
}


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=os.environ.get("KCONFIG_CONFIG", ".config"),
                        help="the configuration file (default: $KCONFIG_CONFIG or .config)")
    parser.add_argument("--build-dir", default="build",
                        help="folder of the generated files (default: build)")
    parser.add_argument("--config-only", action="store_true",
                        help="write .config but do not regenerate the build outputs")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, function in COMMANDS.items():
        command = commands.add_parser(name, help=function.__doc__)
        if name == "defconfig":
            command.add_argument("name", help="a file in gpt2/defconfigs")
            command.add_argument("--tracker", default="",
                                 help="override the tracker: none, trackio, wandb or trackio,wandb")
        if name == "savedefconfig":
            command.add_argument("--out", default="defconfig",
                                 help="where to write the minimal configuration")
        if name == "example":
            command.add_argument("--out", default=str(REPO_ROOT / ".config.example"),
                                 help="where to write the example (default: .config.example)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (ConfigError, OSError) as err:  # OSError: an unwritable build folder, a full disk
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
