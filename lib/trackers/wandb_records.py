"""Read W&B offline run files (wandb/offline-run-*/run-<id>.wandb) without a server.

wandb 0.31 ships no Python reader for these files (the old `datastore`
module and `wandb sync --view` are gone), and W&B's public API only reads
runs from the server.  The format is small and stable: a 7-byte header
(":W&B", magic 0xBEE1, version 0), then the LevelDB log format (32 KiB
blocks of chunks, each with a 7-byte header: CRC32C, length, type
FULL/FIRST/MIDDLE/LAST), each record a protobuf
`wandb.proto.wandb_internal_pb2.Record`.

Tables logged with wandb.Table are history values pointing at a JSON file
in the run folder's files/ (read_table below).

Used to tell a resumed offline run which steps its earlier files already
hold, to check after finish() that every point reached the file, by
scripts/experiments/reproduce.py to find a run and read its config, and by the tracking
tests (tests/tracking_support.py) to read back what a run logged.
"""

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

BLOCK_SIZE = 32 * 1024
HEADER = b":W&B"
FILE_HEADER_SIZE = 7
CHUNK_HEADER = struct.Struct("<IHB")  # crc32c, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
# offline-run-<time>-<id>, or run-<time>-<id> for online runs; wandb adds
# -1, -2, ... when a folder of that name (same id, same second) exists.
_RUN_FOLDER = re.compile(r"(?:offline-)?run-(?P<time>\d{8}_\d{6})-(?P<id>[^-]+)(?:-(?P<n>\d+))?")


@dataclass
class OfflineRun:
    """What one .wandb file holds."""

    path: Path
    run_id: str = ""
    project: str = ""
    entity: str = ""
    name: str = ""
    group: str = ""
    config: dict = field(default_factory=dict)
    history: list = field(default_factory=list)  # [(step, {key: value})], file order
    summary: dict = field(default_factory=dict)  # final values after every update
    alerts: list = field(default_factory=list)  # [{"title", "text", "level"}], file order
    artifacts: list = field(default_factory=list)  # the Artifact records (protobuf), file order

    @property
    def last_step(self):
        return max((step for step, _ in self.history), default=None)


def iter_records(path):
    """Raw protobuf payloads of a .wandb file.  A record cut short by a kill
    ends the iteration instead of raising."""
    data = Path(path).read_bytes()
    if data[: len(HEADER)] != HEADER:
        raise ValueError(f"{path}: not a W&B run file")
    pos, pending = FILE_HEADER_SIZE, b""
    while pos + CHUNK_HEADER.size <= len(data):
        left_in_block = BLOCK_SIZE - pos % BLOCK_SIZE
        if left_in_block < CHUNK_HEADER.size:  # block trailer padding
            pos += left_in_block
            continue
        _, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        if kind == 0:  # zero-filled rest of a block
            pos += left_in_block
            continue
        start = pos + CHUNK_HEADER.size
        payload = data[start : start + length]
        if len(payload) < length:
            return
        pos = start + length
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            yield pending + payload
            pending = b""


def _item_key(item):
    return item.key or ".".join(item.nested_key)


def _history_row(items):
    """{key: value} of a history record.  A value wandb flattened into
    nested keys (a table: samples._type, samples.path, ...) is put back
    together as one {"_type": ..., "path": ...} under its key."""
    row = {}
    for item in items:
        value = json.loads(item.value_json)
        if len(item.nested_key) > 1:
            row.setdefault(item.nested_key[0], {})[".".join(item.nested_key[1:])] = value
        else:
            row[_item_key(item)] = value
    return row


def read_offline_run(path, header_only=False):
    """OfflineRun with the run record, config, history rows and summary of a
    .wandb file; with `header_only`, only the run record (id, project, name,
    the config given to wandb.init), which comes first: finding a run by name
    then reads a few kilobytes, not its history.  A damaged file is a
    ValueError naming it."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    run = OfflineRun(path=Path(path))
    for payload in iter_records(path):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(payload)
        except DecodeError:
            raise ValueError(f"{path}: a record is not a W&B protobuf; the file is damaged") from None
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.project, run.entity = record.run.run_id, record.run.project, record.run.entity
            run.name, run.group = record.run.display_name, record.run.run_group
            run.config.update({_item_key(i): json.loads(i.value_json) for i in record.run.config.update})
            if header_only:
                break
        elif kind == "config":
            run.config.update({_item_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            run.history.append((record.history.step.num, _history_row(record.history.item)))
        elif kind == "artifact":
            run.artifacts.append(record.artifact)
        elif kind == "alert":
            run.alerts.append({"title": record.alert.title, "text": record.alert.text, "level": record.alert.level})
        elif kind == "summary":
            run.summary.update({_item_key(i): json.loads(i.value_json) for i in record.summary.update})
            for item in record.summary.remove:
                run.summary.pop(_item_key(item), None)
    return run


def _run_folder(folder):
    """(start time, repeat number, run id) of a run folder name, or None."""
    match = _RUN_FOLDER.fullmatch(folder.name)
    return (match["time"], int(match["n"] or 0), match["id"]) if match else None


def offline_run_folders(wandb_dir):
    """Every offline-run-* folder under `wandb_dir`, oldest first."""
    folders = [path for path in Path(wandb_dir).glob("offline-run-*") if path.is_dir() and _run_folder(path)]
    return sorted(folders, key=_run_folder)


def offline_run_files(wandb_dir, run_id):
    """The .wandb files of run `run_id` under `wandb_dir` (the folder holding
    offline-run-* and run-* folders), oldest first: a resumed offline run
    writes a new folder with the same id each time it starts."""
    folders = [
        path for path in Path(wandb_dir).glob(f"*run-*-{run_id}*") if (_run_folder(path) or ())[-1:] == (run_id,)
    ]
    files = [folder / f"run-{run_id}.wandb" for folder in sorted(folders, key=_run_folder)]
    return [path for path in files if path.is_file()]


def read_table(run_file, value):
    """The {"columns", "data"} of a table a history row holds (`value`: the
    row's {"_type": "table-file", "path": ...}), from the run's files/."""
    return json.loads((Path(run_file).parent / "files" / value["path"]).read_text(encoding="utf-8"))
