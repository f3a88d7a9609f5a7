"""The append-only JSONL journal: every run start, metric and summary, in order.

Each metric and summary is written before any backend sees it (the "start"
record just after the backends started: it holds their run ids), one JSON
object per line, flushed per record (a few hundred bytes per log interval),
so it survives a crashed backend and a killed process (the OS keeps the
flushed bytes; only a power loss can take the last lines).
scripts/tracking/replay_journal.py reads it back to fill a backend that missed points.

Record kinds:
  {"kind": "start", "time", "project", "run_name", "trackers", "resumed", "config", "backends"}
  {"kind": "log", "step", "metrics"}
  {"kind": "summary", "step", "metrics"}
  {"kind": "table", "step", "key", "columns", "rows"}
  {"kind": "alert", "step", "level", "title", "text"}
  {"kind": "failed", "tracker", "step", "error"}
  {"kind": "finish", "step", "failed"}
"""

import json
from pathlib import Path

JOURNAL_NAME = "tracking.jsonl"


def journal_path(out_dir):
    """Where the journal of a run writing into `out_dir` lives."""
    return Path(out_dir) / JOURNAL_NAME


class Journal:
    """Appends records to out_dir/tracking.jsonl (a resumed run appends to
    the same file, after a new "start" record)."""

    def __init__(self, out_dir):
        self.path = journal_path(out_dir)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record):
        if self._file is None:
            return
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def discard(self):
        """Close, and remove the file when nothing was ever written to it: a
        run whose trackers failed to start leaves no journal behind."""
        self.close()
        if self.path.stat().st_size == 0:
            self.path.unlink()


def read_journal(path):
    """The records of a journal, oldest first.  A last line cut short by a
    kill is skipped; a damaged line elsewhere is an error naming the line."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON record; the journal is damaged") from None
    return records


def journaled_points(records):
    """{step: {metric: value}} of every "log" record, in step order.  A point
    journaled twice (re-run after a resume) keeps its latest value."""
    points = {}
    for record in records:
        if record["kind"] == "log":
            points.setdefault(record["step"], {}).update(record["metrics"])
    return dict(sorted(points.items()))
