"""Turn .config into build/config.py and build/train.args.

build/config.py holds every Kconfig setting as a typed constant (None where
the setting's dependencies are unmet); scripts read it.  build/train.args is
the argument set of gpt2/train.py, one JSON-encoded string per line
(`--flag=value`, `--flag` / `--no-flag` for bools) for the options of
lib/options.py whose dependencies are met; train.py reads it
with `@build/train.args`.

Both come from jinja2 templates in scripts/templates/ (StrictUndefined):
strings reach config.py through repr() and train.args through json.dumps,
so no value in .config can become code or an extra argument.  Nothing is
written unless the whole configuration is valid, and each file is replaced
atomically.  `make` runs this whenever .config or a Kconfig file changes.
"""

import argparse
import json
import sys
from pathlib import Path

import jinja2

from lib.atomic import write_text_atomically
from lib.kconfig import TOP_KCONFIG, ConfigError, menu_title, python_type, read_config, typed_value
from lib.options import options, train_options

TEMPLATES = Path(__file__).resolve().parent / "templates"
OUTPUTS = {"config.py": "config.py.j2", "train.args": "train.args.j2"}


def settings_by_menu(kconf):
    """{menu title: [setting]}: every symbol, named choice and list, in
    Kconfig order.  Choice members and list members stay in too (bools)."""
    derived = {option.name: option for option in options(kconf) if option.kind in ("choice", "list")}
    menus = {}
    for sym in kconf.unique_defined_syms:
        if sym.name in derived:
            continue
        value = typed_value(sym)
        annotation = python_type(sym).__name__
        menus.setdefault(menu_title(sym), []).append({
            "name": sym.name,
            "value": value,
            "annotation": annotation if value is not None else f"{annotation} | None",
        })
    for option in derived.values():
        menus.setdefault(option.group, []).append(
            {"name": option.name, "value": option.value(kconf), "annotation": "str"})
    return menus


def train_arguments(kconf):
    """train.py arguments for every option whose dependencies are met."""
    args = []
    for option in train_options(kconf):
        value = option.value(kconf)
        if value is not None:
            args.append(option.render(value))
    return args


def render(kconf):
    """{output file name: text} for a loaded, valid configuration."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pyrepr"] = repr
    # ASCII-only JSON: a value holding U+2028 or U+0085 stays on one line,
    # which str.splitlines() (used by argparse's @file reading) would split.
    env.filters["json"] = lambda value: json.dumps(value, ensure_ascii=True)
    context = {"menus": settings_by_menu(kconf), "args": train_arguments(kconf)}
    return {name: env.get_template(template).render(context) for name, template in OUTPUTS.items()}


def generate(config, build_dir, kconfig=TOP_KCONFIG):
    """Validate `config` and (re)write the outputs into `build_dir`.

    Everything is rendered before anything is written, so a bad .config
    leaves the previous outputs untouched.
    """
    texts = render(read_config(config, kconfig))
    for name, text in texts.items():
        write_text_atomically(Path(build_dir) / name, text)
    return [Path(build_dir) / name for name in texts]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=".config", help="configuration to read")
    parser.add_argument("--build-dir", default="build", help="folder of the outputs")
    parser.add_argument("--kconfig", default=TOP_KCONFIG, help="top-level Kconfig file")
    args = parser.parse_args(argv)
    try:
        written = generate(args.config, args.build_dir, args.kconfig)
    except (ConfigError, OSError) as err:  # OSError: an unwritable build folder, a full disk
        sys.exit(f"error: {err}")
    print(f"{args.config} -> {', '.join(str(path) for path in written)}")


if __name__ == "__main__":
    main()
