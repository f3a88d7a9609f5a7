"""List the Makefile's targets, one line each: what `make help` prints.

A target is documented by a `## text` comment on its rule line; undocumented
rules (generated files, the venv stamp) are left out.
"""

import re
import sys
from pathlib import Path

RULE = re.compile(r"^([A-Za-z0-9_.%-]+):[^=]*##\s*(.+)$")


def targets(makefile):
    """[(target, description)] in Makefile order."""
    found = []
    for line in Path(makefile).read_text(encoding="utf-8").splitlines():
        match = RULE.match(line)
        if match:
            found.append((match.group(1).replace("%", "<name>"), match.group(2).strip()))
    return found


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    rows = targets(argv[0] if argv else "Makefile")
    width = max(len(target) for target, _ in rows)
    print("Targets (variables: TRACKER, ARGS, PORT, KCONFIG_CONFIG, BUILD, DEFCONFIG, TORCH_SPEC):")
    for target, description in rows:
        print(f"  make {target:<{width}}  {description}")


if __name__ == "__main__":
    main()
