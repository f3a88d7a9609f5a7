"""Alerts through lib/trackers' Trackers: the console line, the journal
record, every working backend's alert; a backend that fails mid-run is
announced through the others.  (The alerts of real training runs, read
back from Trackio's database and W&B's offline file: tests/test_sample.py.)"""

import pytest

from lib.trackers.base import Tracker, Trackers
from lib.trackers.journal import Journal, read_journal
from lib.trackers.step_filter import StepFilter


class Recording(Tracker):
    """A backend that keeps what it is given; with `fail_on`, raises there."""

    def __init__(self, name, fail_on=None):
        self.name, self.fail_on, self.alerts, self.points = name, fail_on, [], []
        self.filter = StepFilter()
        self._run = self

    def log(self, metrics, step):
        if self.fail_on == "log":
            raise OSError("database is locked")
        self.points.append((step, metrics))

    def alert(self, title, text, level="WARN", step=None):
        self.alerts.append((title, text, level, step))

    def finish(self):
        pass


def test_an_alert_reaches_console_journal_and_every_backend(tmp_path, capsys):
    a, b = Recording("a"), Recording("b")
    trackers = Trackers([a, b], journal=Journal(tmp_path), out_dir=tmp_path)
    trackers.log({"train/loss": 2.0}, step=7)
    trackers.alert("loss spike", "iter 7: train loss 2.0 is 2.1x the mean", "WARN")
    trackers.finish()
    assert a.alerts == b.alerts == [("loss spike", "iter 7: train loss 2.0 is 2.1x the mean", "WARN", 7)]
    assert "alert [WARN] loss spike: iter 7: train loss 2.0 is 2.1x the mean\n" in capsys.readouterr().out
    (record,) = [r for r in read_journal(tmp_path / "tracking.jsonl") if r["kind"] == "alert"]
    assert record == {"kind": "alert", "step": 7, "level": "WARN", "title": "loss spike",
                      "text": "iter 7: train loss 2.0 is 2.1x the mean"}
    with pytest.raises(ValueError, match="alert level 'LOUD'"):
        trackers.alert("x", "y", "LOUD")


def test_a_backend_failing_mid_run_is_announced_through_the_others(tmp_path, capsys):
    broken, working = Recording("broken", fail_on="log"), Recording("working")
    trackers = Trackers([broken, working], journal=Journal(tmp_path), out_dir=tmp_path)
    trackers.log({"train/loss": 2.0}, step=3)
    trackers.finish()
    assert working.points == [(3, {"train/loss": 2.0})]
    ((title, text, level, step),) = working.alerts
    assert (title, level, step) == ("tracker broken failed", "ERROR", 3)
    assert text == "in log() at step 3: OSError: database is locked"
    assert broken.alerts == []  # marked failed first: no alert to itself
    kinds = [r["kind"] for r in read_journal(tmp_path / "tracking.jsonl")]
    assert kinds == ["log", "failed", "alert", "finish"]
    assert "warning: tracker broken failed in log() at step 3" in capsys.readouterr().err


def test_one_alert_signature_for_the_fan_out_and_every_backend():
    """Trackers.alert and each backend's alert take the same arguments, so a
    call written for one fits the other."""
    import inspect

    from lib.trackers import backend_names
    from lib.trackers.registry import backend_module

    signature = inspect.signature(Trackers.alert)
    backends = [Tracker, *(module.__dict__[name] for module in map(backend_module, backend_names())
                           for name in dir(module) if isinstance(getattr(module, name), type)
                           and issubclass(getattr(module, name), Tracker) and getattr(module, name) is not Tracker)]
    assert len(backends) > 2
    for cls in backends:
        assert inspect.signature(cls.alert) == signature, cls.__qualname__


def test_an_alert_at_a_given_step(tmp_path, capsys):
    backend = Recording("a")
    trackers = Trackers([backend], journal=Journal(tmp_path), out_dir=tmp_path)
    trackers.log({"train/loss": 2.0}, step=7)
    trackers.alert("resumed", "from iter 3", "INFO", step=3)
    assert backend.alerts == [("resumed", "from iter 3", "INFO", 3)]
