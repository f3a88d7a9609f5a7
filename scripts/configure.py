"""Create and inspect .config: the kconfig tools behind `make <command>`.

  defconfig NAME [--tracker T]  gpt2/defconfigs/NAME, the rest at defaults -> .config
  olddefconfig                  .config (or nothing), new options at defaults -> .config
  savedefconfig                 .config -> ./defconfig, only what differs from the defaults
  listnewconfig                 the options .config does not set yet
  list-defconfigs               the presets, each with its description
  menuconfig                    kconfiglib's terminal menu over .config

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
import sys
import threading
import time
from pathlib import Path

from kconfiglib import BOOL, HEX, INT, STRING, TRI_TO_STR

from lib.kconfig import (REPO_ROOT, ConfigError, load_config, load_tree, read_config,
                         select_choice_value)
from scripts.genconfig import generate, replaced_atomically

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


def defconfig(args):
    """.config from a preset in gpt2/defconfigs, everything else at its default."""
    if args.name not in presets():
        raise ConfigError(f"no preset {args.name!r} in gpt2/defconfigs; "
                          "`make list-defconfigs` lists them")
    kconf = load_tree()
    load_config(kconf, DEFCONFIGS / args.name)
    note = ""
    if args.tracker:
        note = f" (tracker: {select_choice_value(kconf, 'TRACKER', args.tracker)})"
    print(f"preset {args.name}{note}: {write_config(kconf, args)}")


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
    """Print the options .config does not set, at their defaults."""
    kconf = read_config(args.config)
    for sym in kconf.unique_defined_syms:
        # Same test as kconfiglib's listnewconfig: options a user could set
        # (choice members included) that the file leaves unset.
        settable = len(sym.assignable) > 1 or (
            sym.visibility and (sym.orig_type in (INT, HEX, STRING) or sym.choice))
        if sym.user_value is None and settable:
            print(f"CONFIG_{sym.name}={TRI_TO_STR[sym.tri_value]}" if sym.orig_type is BOOL
                  else sym.config_string.strip())


def list_defconfigs(args):
    """Print the presets with the first comment line of each."""
    print("Presets (`make defconfig-<name> [TRACKER=none|trackio|wandb|trackio,wandb]`):")
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
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (ConfigError, OSError) as err:  # OSError: an unwritable build folder, a full disk
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
