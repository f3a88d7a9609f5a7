"""The tracker interface and the fan-out container the loop uses.

The training loop holds one `Trackers` and calls `.log(metrics, step)` at its
log and eval intervals, `.table(key, columns, rows, step)` for text samples,
`.alert(title, text, level, step=None)` when something needs a human, `.state_dict()`
for each checkpoint, `.summary(metrics)` once at the end and `.finish()` in a
`finally`; it never asks which backends are on.  Every log and summary is written to the journal first (see
journal.py), then handed to each backend.  A backend that raises is reported
once, marked failed and skipped from then on: losing a dashboard must never
stop a training run, and the journal still holds every point for
scripts/tracking/replay_journal.py.
"""

import numbers
import sys
from lib.errors import UserError

REPLAY_SCRIPT = "scripts/tracking/replay_journal.py"
ALERT_LEVELS = ("INFO", "WARN", "ERROR")  # the levels both Trackio and W&B know


class TrackerError(UserError):
    """A requested tracker cannot be used; the message is one line saying
    what is wrong and how to fix it (e.g. which package to pip install)."""


class Tracker:
    """One experiment-tracking backend.  Metrics are plain Python numbers;
    `step` is always the training iteration.  Every point goes through
    `self.filter` (a StepFilter), so none is written to the backend twice."""

    name = "tracker"
    # Each backend's __init__ sets its own StepFilter (built from what its
    # run already holds); a shared class-level one would mix their points.
    filter = None

    @property
    def points_sent(self):
        """How many (metric, step) points this process handed to the backend."""
        return self.filter.points_sent

    def log(self, metrics, step):
        """Record `metrics` ({name: float}) at training iteration `step`:
        the points the backend does not hold yet go to `self._run.log`, which
        both backends' run objects (trackio.Run, wandb.Run) provide."""
        fresh = self.filter.fresh(metrics, step)
        if fresh:
            self._run.log(fresh, step=step)
            self.filter.record(fresh, step)

    def log_value(self, key, value, step):
        """Record one value that is not a number (a backend's table object)
        under `key`, through the same filter as metrics: a resumed run
        does not write it twice, and finish() counts it."""
        if self.filter.fresh({key: value}, step):
            self._run.log({key: value}, step=step)
            self.filter.record({key: value}, step)

    def summary(self, metrics, step):
        """Record the run's final numbers; `step` is the last logged step."""
        raise NotImplementedError

    def table(self, key, columns, rows, step):
        """Record a table (`rows`: lists of str/number, one per row) under
        `key` at `step`, as the backend shows tables best (log_value with
        the backend's table object)."""
        raise NotImplementedError

    def alert(self, title, text, level="WARN", step=None):
        """Send an alert through the backend's own alert API; a backend
        (or an installed version) without one does nothing.  `level` is
        one of ALERT_LEVELS; `step` the iteration it is about (Trackers
        always passes one: the last logged step when its caller gives
        none).  The same signature as Trackers.alert."""

    def log_checkpoint(self, path, name, aliases):
        """Log the checkpoint file `path` as a new version of artifact
        `name` with `aliases` (lib/trackers/artifacts.py), through the
        backend's artifact API; a backend without one does nothing."""

    def state_dict(self):
        """What reattaches to this run after a restart (ids, names), JSON-safe."""
        raise NotImplementedError

    def finish(self):
        """Flush and close the run; raise TrackerError if points were lost."""
        raise NotImplementedError


def plain_metrics(metrics):
    """{name: float} from {name: number}; None values (a number the run never
    produced, e.g. no eval yet) are left out.  A tensor is refused rather than
    converted: float(tensor) would make the GPU wait at every log call, so the
    loop should call .item() once per interval and pass the Python float."""
    plain = {}
    for key, value in metrics.items():
        if value is None:
            continue
        if not isinstance(value, numbers.Real):
            raise TypeError(
                f"metric {key!r} is a {type(value).__name__}, not a Python number; "
                "pass value.item() (once per log interval)"
            )
        plain[str(key)] = float(value)
    return plain


class Trackers:
    """Fans each call out to the journal, then to every working backend."""

    def __init__(self, backends=(), *, project="", run_name="", group="", journal=None, out_dir="", last_step=None):
        self.backends = {backend.name: backend for backend in backends}
        self.project = project
        self.run_name = run_name
        self.group = group
        self.journal = journal
        self.out_dir = str(out_dir)
        self.failed = {}  # backend name -> error text
        self.last_step = last_step
        self._finished = False

    @property
    def names(self):
        """Names of the backends that are on, e.g. ['trackio', 'wandb']."""
        return list(self.backends)

    def log(self, metrics, step):
        """Record metrics at training iteration `step` (an int, always given)."""
        step = int(step)
        metrics = plain_metrics(metrics)
        self.last_step = step if self.last_step is None else max(self.last_step, step)
        self._journal({"kind": "log", "step": step, "metrics": metrics})
        for name in self._working():
            self._call(name, "log", metrics, step)

    def summary(self, metrics):
        """Record the final numbers (best_val_loss, final_train_loss, ...)."""
        metrics = plain_metrics(metrics)
        step = self.last_step if self.last_step is not None else 0
        self._journal({"kind": "summary", "step": step, "metrics": metrics})
        for name in self._working():
            self._call(name, "summary", metrics, step)

    def table(self, key, columns, rows, step):
        """Record a table at training iteration `step`: rows of strings and
        numbers under `columns`, e.g. the text samples (step, prompt, text)."""
        step = int(step)
        rows = [list(row) for row in rows]
        self.last_step = step if self.last_step is None else max(self.last_step, step)
        self._journal({"kind": "table", "step": step, "key": key, "columns": list(columns), "rows": rows})
        for name in self._working():
            self._call(name, "table", key, list(columns), rows, step)

    def alert(self, title, text, level="WARN", step=None):
        """Tell a human: one line on the console (stdout, with the run's
        other lines), a journal record, and each working backend's alert
        (Trackio's and W&B's own), at `step` (None: the last logged step)."""
        if level not in ALERT_LEVELS:
            raise ValueError(f"alert level {level!r}: use one of {', '.join(ALERT_LEVELS)}")
        if step is None:
            step = self.last_step if self.last_step is not None else 0
        step = int(step)
        print(f"alert [{level}] {title}: {text}", flush=True)
        self._journal({"kind": "alert", "step": step, "level": level, "title": title, "text": text})
        for name in self._working():
            self._call(name, "alert", title, text, level, step)

    def log_checkpoint(self, path, is_best):
        """The checkpoint file `path` as the next version of the run's
        artifact checkpoint-<run name>, aliased latest (and best if
        `is_best`), in every working backend (LOG_CHECKPOINTS)."""
        from lib.trackers.artifacts import artifact_name

        name, aliases = artifact_name(self.run_name), ["latest", *(["best"] if is_best else [])]
        step = self.last_step if self.last_step is not None else 0
        self._journal({"kind": "artifact", "step": step, "name": name, "aliases": aliases, "file": str(path)})
        for backend in self._working():
            self._call(backend, "log_checkpoint", str(path), name, aliases)

    def catch_up(self, points):
        """After a restart, hand every backend the journaled points
        ({step: metrics}) of the runs before; each keeps those it lacks
        (W&B offline loses its buffered records in a kill -9, Trackio up to
        0.5 s of queued ones).  Returns {backend: points added}."""
        added = {}
        for name in self._working():
            backend = self.backends[name]
            before = backend.points_sent
            for step, metrics in points.items():
                self._call(name, "log", metrics, step)
                if name in self.failed:
                    break
            added[name] = backend.points_sent - before
        return added

    def state_dict(self):
        """Names and run ids to store in the checkpoint; give them back to
        open_trackers(resume_state=...) to continue the same runs."""
        return {
            "project": self.project,
            "run_name": self.run_name,
            "group": self.group,
            "last_step": self.last_step,
            "backends": {name: backend.state_dict() for name, backend in self.backends.items()},
        }

    def finish(self):
        """Flush and close every backend (safe to call twice)."""
        if self._finished:
            return
        self._finished = True
        for name, backend in self.backends.items():
            if name not in self.failed:
                self._call(name, "finish")
                continue
            try:  # best effort: release the failed backend's threads and files
                backend.finish()
            except Exception:
                pass
        self._journal({"kind": "finish", "step": self.last_step, "failed": sorted(self.failed)})
        if self.journal is not None:
            self.journal.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.finish()

    def _working(self):
        return [name for name in self.backends if name not in self.failed]

    def _journal(self, record):
        if self.journal is None:
            return
        try:
            self.journal.write(record)
        except OSError as exc:  # e.g. a full disk: keep training, say so once
            journal, self.journal = self.journal, None
            print(
                f"warning: cannot write the tracking journal {journal.path} ({exc}); going on without it",
                file=sys.stderr,
                flush=True,
            )
            try:
                journal.close()
            except OSError:
                pass

    def _call(self, name, method, *args):
        try:
            getattr(self.backends[name], method)(*args)
        except Exception as exc:  # a dashboard problem must not end training
            self._fail(name, method, exc)

    def _fail(self, name, method, exc):
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        self.failed[name] = error
        self._journal({"kind": "failed", "tracker": name, "step": self.last_step, "error": error})
        where = f"the journal {self.journal.path}" if self.journal is not None else "no journal (no --out-dir)"
        replay = (
            f"; restore it with: python {REPLAY_SCRIPT} --out-dir {self.out_dir} --tracker {name}"
            if self.journal is not None
            else ""
        )
        # finish() runs after the last step: "training goes on" would be wrong there.
        outcome = "training is unaffected" if method == "finish" else "training goes on without it"
        print(
            f"warning: tracker {name} failed in {method}() at step {self.last_step} ({error}); "
            f"{outcome}, {where} keeps every point{replay}",
            file=sys.stderr,
            flush=True,
        )
        # The backends still working carry the news to the dashboards (this
        # backend is marked failed first, so a failing alert cannot loop);
        # in finish() the others may be closed already.
        if method != "finish" and self._working():
            self.alert(f"tracker {name} failed", f"in {method}() at step {self.last_step}: {error}", "ERROR")


def null_trackers():
    """A Trackers with no backends and no journal, for ranks other than 0."""
    return Trackers()
