"""The Kconfig tree is plain kernel Kconfig: the Linux kernel's own C tools
(Debian's kconfig-frontends-nox: kconfig-conf, kconfig-mconf, kconfig-nconf)
read it and write exactly what kconfiglib writes.

.ci/run installs the package on CI (CI=true), so there these tests run; on a
machine without kconfig-conf they are skipped with the reason.
"""

import os
import shutil
import subprocess

import pytest

from lib.kconfig import REPO_ROOT, load_tree
from scripts.configure import DEFCONFIGS, main as configure_main, presets


KCONFIG_CONF = shutil.which("kconfig-conf")
pytestmark = pytest.mark.skipif(
    KCONFIG_CONF is None and os.environ.get("CI") != "true",
    reason="kconfig-conf not installed (apt-get install kconfig-frontends-nox; .ci/run does on CI)")


def assignments(path):
    """The option lines of a .config, in order: `CONFIG_X=v` and
    `# CONFIG_X is not set` (headers and menu comments differ by tool)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines
            if line.startswith("CONFIG_") or (line.startswith("# CONFIG_") and line.endswith(" is not set"))]


def kconfig_conf(mode, config):
    """Run the kernel's kconfig-conf from the top folder (paths in `source`
    are relative to it) on `config`; returns its option lines."""
    env = {**os.environ, "KCONFIG_CONFIG": str(config)}
    env.pop("srctree", None)
    done = subprocess.run([KCONFIG_CONF or "kconfig-conf", f"--{mode}", "Kconfig"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout
    return assignments(config)


def test_alldefconfig_gives_kconfiglibs_defaults(tmp_path):
    config = tmp_path / "c-tool.config"
    c_lines = kconfig_conf("alldefconfig", config)
    ours = tmp_path / "kconfiglib.config"
    load_tree().write_config(str(ours), save_old=False)
    assert len(c_lines) > 50  # the whole tree was read, not only the top file
    assert c_lines == assignments(ours)


@pytest.mark.parametrize("preset", sorted(presets()))
def test_olddefconfig_on_each_preset_matches_make_defconfig(tmp_path, preset):
    config = tmp_path / "c-tool.config"
    shutil.copyfile(DEFCONFIGS / preset, config)
    c_lines = kconfig_conf("olddefconfig", config)
    ours = tmp_path / ".config"
    configure_main(["--config", str(ours), "--build-dir", str(tmp_path / "build"), "--config-only",
                    "defconfig", preset])
    assert c_lines == assignments(ours)
