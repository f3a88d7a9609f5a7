"""`make trackio-show` for real: runs logged through lib.trackers, the
dashboard started the way the Makefile starts it, and the page's own HTTP API
(and, when Chromium is installed, the rendered page) asked what it shows.

Trackio 0.43's dashboard is a Starlette app, no longer Gradio: the page
(trackio/frontend/src/lib/api.js) POSTs a JSON object of keyword arguments to
/api/<name> and reads {"data": ...} back; GET /version answers
{"version": ...}.  The /gradio_api/* routes exist only on Hugging Face Spaces.
"""

import contextlib
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest
from tracking_support import tracking

from lib.trackers import open_trackers
from lib.trackers.trackio_tracker import import_trackio

REPO_ROOT = Path(__file__).resolve().parent.parent
# As tests/test_config.py: this interpreter, without the venv step.
MAKE = ["make", "-s", "-C", str(REPO_ROOT), "-o", ".venv/.installed", f"PYTHON={sys.executable}"]
GROUP = "G"
RUNS = ("run0", "run1", "run2", "run3")
STEPS = (0, 10, 20, 30, 40)
START_TIMEOUT = 60  # seconds until the dashboard must answer
STOP_TIMEOUT = 10  # seconds from SIGTERM until the process group must be gone
# No proxy for 127.0.0.1, whatever http_proxy / no_proxy say.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def logged_values(index):
    """{metric: {step: value}} that run `index` logs: distinct per run."""
    return {
        "train/loss": {step: 4.0 - step / 20 + index / 100 for step in STEPS},
        "val/loss": {step: 4.5 - step / 40 + index / 100 for step in STEPS},
    }


def log_runs(project, out_root):
    """Log the four runs of group G through lib.trackers, as train.py does;
    returns the Trackio folder they went to.  That is the folder this
    process's trackio was imported with (conftest's scratch TRACKIO_DIR):
    Trackio reads TRACKIO_DIR once, so --trackio-dir must name that one."""
    trackio_dir = Path(import_trackio().utils.TRACKIO_DIR).resolve()
    for index, run in enumerate(RUNS):
        cfg = tracking("trackio", project=project, run_name=run,
                       extra=("--tracker-group", GROUP, "--trackio-dir", str(trackio_dir)))
        trackers = open_trackers(cfg, config={"seed": index}, out_dir=out_root / run)
        values = logged_values(index)
        for step in STEPS:
            trackers.log({key: series[step] for key, series in values.items()}, step=step)
        trackers.finish()  # raises when Trackio lost a point
    return trackio_dir


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(tmp_path, project, trackio_dir):
    """tmp_path/.config: the Trackio preset with our project and folder;
    no build/ yet, so `make trackio-show` must generate build/config.py."""
    result = subprocess.run([*MAKE, f"KCONFIG_CONFIG={tmp_path / '.config'}", f"BUILD={tmp_path / 'build'}",
                             "defconfig-gpt2-tiny-shakespeare", "TRACKER=trackio"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / ".config").read_text()
    for symbol, value in (("TRACKER_PROJECT", project), ("TRACKIO_DIR", str(trackio_dir))):
        text, count = re.subn(rf"^CONFIG_{symbol}=.*$", lambda _: f'CONFIG_{symbol}="{value}"', text,
                              flags=re.M)
        assert count == 1, symbol
    (tmp_path / ".config").write_text(text)
    shutil.rmtree(tmp_path / "build")


def group_members(pgid):
    """Processes of group `pgid` that still run (zombies, already dead and
    only waiting for their parent to notice, do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: any member at all
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            members.append(int(stat.parent.name))
    return members


@dataclass
class Stopped:
    returncode: int
    killed: bool  # SIGKILL was needed
    left: list  # processes of the group still running afterwards


def stop(process):
    """SIGTERM to the process group, wait; SIGKILL when it does not end."""
    pgid, killed = process.pid, False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT)
    deadline = time.monotonic() + STOP_TIMEOUT  # the group leader's children end just after it
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = group_members(pgid)
    if left:
        killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    return Stopped(process.returncode, killed, left)


def get(url, timeout=5):
    with HTTP.open(url, timeout=timeout) as response:
        return response.status, response.read().decode()


def api(base, name, **params):
    """POST /api/<name> as the page's callApi() does; the `data` it answers."""
    request = urllib.request.Request(f"{base}/api/{name}", data=json.dumps(params).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with HTTP.open(request, timeout=10) as response:
        body = json.load(response)
    assert "error" not in body, f"{name}: {body['error']}"
    return body["data"]


@dataclass
class Dashboard:
    process: subprocess.Popen
    base: str  # http://127.0.0.1:<port>
    log: Path  # its stdout and stderr


@contextlib.contextmanager
def trackio_show(tmp_path, project, trackio_dir):
    """`make trackio-show PORT=<free port>` in its own process group, once it
    answers HTTP; stopped (again, harmlessly) on the way out."""
    write_config(tmp_path, project, trackio_dir)
    port = free_port()
    log = tmp_path / "dashboard.log"
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",  # the log keeps what it printed even after SIGTERM
        BROWSER="true",  # `trackio show` opens a browser tab: make that a no-op
        TRACKIO_DIR=str(tmp_path / "not-the-configured-folder"),  # .config's TRACKIO_DIR must win
    )
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*MAKE, f"KCONFIG_CONFIG={tmp_path / '.config'}", f"BUILD={tmp_path / 'build'}",
             "trackio-show", f"PORT={port}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"make trackio-show exited with {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(OSError):
                if get(f"{base}/version", timeout=2)[0] == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"no dashboard on {base} after {START_TIMEOUT} s:\n{log.read_text()}")
            time.sleep(0.2)
        yield Dashboard(process, base, log)
    finally:
        stop(process)


def test_make_trackio_show_serves_the_runs_and_stops_cleanly(tmp_path):
    project = f"dash-{os.getpid()}-{tmp_path.name}"[:60]
    trackio_dir = log_runs(project, tmp_path / "out")
    started = time.monotonic()
    with trackio_show(tmp_path, project, trackio_dir) as dashboard:
        startup = time.monotonic() - started
        base = dashboard.base
        assert json.loads(get(f"{base}/version")[1])["version"] == version("trackio")
        status, page = get(f"{base}/?project={project}")
        assert status == 200 and "<title>Trackio Dashboard</title>" in page

        # What the page asks, in its order: projects, runs, configs, logs.
        assert project in api(base, "get_all_projects")
        runs = api(base, "get_runs_for_project", project=project)
        assert sorted(run["name"] for run in runs) == list(RUNS)
        assert len({run["id"] for run in runs}) == 4
        summary = api(base, "get_project_summary", project=project)
        assert (summary["num_runs"], summary["last_activity"]) == (4, STEPS[-1])
        configs = api(base, "get_run_configs", project=project)
        assert {configs[run["id"]]["_Group"] for run in runs} == {GROUP}  # the page's "Group by"
        assert {configs[run["id"]]["tracker_run_name"] for run in runs} == set(RUNS)

        by_id = {run["id"]: run["name"] for run in runs}
        for run_id, name in by_id.items():
            assert set(api(base, "get_metrics_for_run", project=project, run=name, run_id=run_id)) == {
                "train/loss", "val/loss"}
        # The charts' data: every point of every run, with the logged values.
        batch = api(base, "get_logs_batch", project=project,
                    runs=[{"run": name, "run_id": run_id} for run_id, name in by_id.items()])
        assert len(batch) == 4
        for entry in batch:
            expected = logged_values(RUNS.index(by_id[entry["run_id"]]))
            for key, series in expected.items():
                got = {row["step"]: row[key] for row in entry["logs"] if key in row}
                assert got == pytest.approx(series), (entry["run"], key)
        # One series alone, as the CLI and the run page read it.
        values = api(base, "get_metric_values", project=project, run="run2", metric_name="val/loss")
        assert {row["step"]: row["value"] for row in values} == pytest.approx(logged_values(2)["val/loss"])

        process = dashboard.process
        stopped_at = time.monotonic()
        stopped = stop(process)
        stop_time = time.monotonic() - stopped_at

    output = dashboard.log.read_text()
    port = base.rsplit(":", 1)[1]
    assert f"GRADIO_SERVER_PORT={port} trackio show --project {project}" in output, output
    assert f"launched at: {base}/?project={project}" in output, output  # our port, not a neighbour
    assert not stopped.killed and not stopped.left, f"SIGTERM did not end it: {stopped}"
    assert stopped.returncode is not None and stopped.returncode != 0  # ended by the signal
    with pytest.raises(OSError):
        get(f"{base}/version", timeout=2)
    print(f"dashboard up in {startup:.1f} s, stopped in {stop_time:.2f} s (exit {stopped.returncode})")


CHROMIUM = shutil.which("chromium")
SCREENSHOT_ENV = "GPT2LAB_DASHBOARD_PNG"


def screenshot(url, png, tmp_path):
    """Save the rendered page as a PNG (asked for with $GPT2LAB_DASHBOARD_PNG)."""
    png = png.resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    shot = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-proxy-server",
         "--no-first-run", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile-shot'}",
         "--virtual-time-budget=10000", "--window-size=1400,900", f"--screenshot={png}", url],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=90, start_new_session=True)
    assert shot.returncode == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", shot.stderr[-2000:]


@pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH (Debian: apt-get install chromium)")
def test_dashboard_page_renders_the_runs_in_headless_chromium(tmp_path):
    project = f"page-{os.getpid()}-{tmp_path.name}"[:60]
    trackio_dir = log_runs(project, tmp_path / "out")
    with trackio_show(tmp_path, project, trackio_dir) as dashboard:
        browser = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox",  # root in a container has no sandbox
             "--disable-gpu", "--disable-dev-shm-usage", "--no-proxy-server", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=10000",  # let the page's scripts fetch and render
             "--dump-dom", f"{dashboard.base}/?project={project}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            dom, _ = browser.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            stop(browser)
            pytest.fail("chromium did not dump the page within 60 s")
        assert not stop(browser).left
        if os.environ.get(SCREENSHOT_ENV):  # the README's picture: GPT2LAB_DASHBOARD_PNG=docs/img/dashboard.png
            screenshot(f"{dashboard.base}/?project={project}", Path(os.environ[SCREENSHOT_ENV]), tmp_path)
    assert browser.returncode == 0
    text = dom.decode(errors="replace")
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", text, flags=re.S)
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())
    assert f"Project {project}" in text, text[:2000]
    assert "Runs (4)" in text, text[:2000]
    for run in RUNS:
        assert re.search(rf"\b{run}\b", text), (run, text[:2000])
    assert "train (1) loss" in text and "val (1) loss" in text, text[:2000]  # one chart per metric


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))
