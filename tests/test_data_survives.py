"""Prepared data survives a failed preparation (gpt2/data/prepare.py): the
new data is made in a temporary sibling folder and takes the place of the
old one only when complete.  And a .txt input is streamed in pieces, with
the same tokens as when it was tokenized whole."""

import errno
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpt2.data import prepare as prepare_data
from gpt2.data import sources as data_sources
from gpt2.data.prepare import ensure_prepared
from gpt2.data.sources import DataError, DocumentSource, HubDataset

REPO_ROOT = Path(__file__).resolve().parent.parent
STORIES = [f"Story {i}: the cat sat on mat {i} and thought about fish." for i in range(60)]


def snapshot(folder):
    """Every file of `folder` with its bytes and modification time."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.fixture
def prepared(tmp_path):
    """tinystories prepared from a local .jsonl: (data dir, folder, snapshot)."""
    source = tmp_path / "stories.jsonl"
    source.write_text("".join(json.dumps({"text": s}) + "\n" for s in STORIES))
    folder = ensure_prepared("tinystories", tmp_path / "data", input_path=source, log=lambda *a: None)
    return tmp_path / "data", folder, snapshot(folder)


def stream_that(fails_with):
    """A hub stream opener whose stream gives 20 documents, then raises."""

    def opener(spec, folder):
        def stream():
            yield from STORIES[:20]
            raise fails_with

        return DocumentSource(spec.describe(), None, stream())

    return opener


def full_disk(monkeypatch):
    real = prepare_data._TokenFiles.write

    def write(self, split, ids):
        if sum(self.counts.values()):  # the second write finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device", str(self.files[split].name))
        real(self, split, ids)

    monkeypatch.setattr(prepare_data._TokenFiles, "write", write)


def not_utf8(tmp_path):
    path = tmp_path / "binary.txt"
    path.write_bytes(b"text at first\n" * 100 + b"\xff\xfe\x00\x81 binary")
    return {"input_path": path}


FAILURES = {
    "not UTF-8": (not_utf8, DataError, "is not UTF-8 text"),
    "typo'd path": (lambda tmp_path: {"input_path": tmp_path / "storeis.jsonl"}, DataError, "not found"),
    "stream drops": (lambda tmp_path: {"max_tokens": 5000}, DataError, "connection reset"),
    "Ctrl-C": (lambda tmp_path: {"max_tokens": 5000}, KeyboardInterrupt, None),
    "full disk": (lambda tmp_path: {"input_path": not_utf8(tmp_path)["input_path"].with_name("ok.txt")},
                  DataError, "No space left on device"),
}


@pytest.mark.parametrize("kind", FAILURES)
def test_a_failed_preparation_leaves_the_data_as_it_was(prepared, tmp_path, monkeypatch, kind):
    data_dir, folder, before = prepared
    make_request, error, message = FAILURES[kind]
    request = make_request(tmp_path)
    monkeypatch.setattr(prepare_data, "DOC_BATCH_CHARS", 500)  # tokens are written before the failure
    monkeypatch.setattr(prepare_data, "TEXT_CHUNK_CHARS", 500)
    if kind == "stream drops":
        # the real stream turns a dropped connection into DataError (sources._hub_texts)
        monkeypatch.setitem(data_sources.OPENERS, HubDataset,
                            stream_that(DataError("cannot stream hf://... (connection reset)")))
    if kind == "Ctrl-C":
        monkeypatch.setitem(data_sources.OPENERS, HubDataset, stream_that(KeyboardInterrupt()))
    if kind == "full disk":
        request["input_path"].write_text("To be, or not to be: that is the question.\n" * 200)
        full_disk(monkeypatch)
    with pytest.raises(error, match=message):
        ensure_prepared("tinystories", data_dir, log=lambda *a: None, **request)
    assert snapshot(folder) == before
    assert sorted(p.name for p in data_dir.iterdir()) == ["tinystories"]  # no temporary left beside it
    lines = []
    assert ensure_prepared("tinystories", data_dir, log=lines.append) == folder
    assert lines[-1].startswith("using prepared data")


def test_a_successful_preparation_replaces_the_old_data_whole(prepared, tmp_path):
    data_dir, folder, before = prepared
    (folder / "notes.txt").write_text("the user's own file")  # kept: only the token files are redone
    source = tmp_path / "other.txt"
    source.write_text("Now is the winter of our discontent\nmade glorious summer.\n" * 30)
    ensure_prepared("tinystories", data_dir, input_path=source, log=lambda *a: None)
    after = snapshot(folder)
    assert after["train.bin"] != before["train.bin"] and after["notes.txt"][0] == b"the user's own file"
    assert json.loads(after["meta.json"][0])["source"] == str(source)
    assert sorted(p.name for p in data_dir.iterdir()) == ["tinystories"]


KILLED_CHILD = """
import sys, time
from pathlib import Path
from gpt2.data import prepare, sources

marker = Path(sys.argv[2])

def opener(spec, folder):
    def stream():
        for i in range(200):
            yield f"Story {i}: a dog found a ball and was happy all day long."
        marker.write_text("tokens written")  # the first batches are on disk by now
        time.sleep(120)
        yield "never reached"
    return sources.DocumentSource(spec.describe(), None, stream())

sources.OPENERS[sources.HubDataset] = opener
prepare.DOC_BATCH_CHARS = 1000
prepare.ensure_prepared("tinystories", sys.argv[1], max_tokens=100000, num_workers=1)
"""


def test_sigkill_during_preparation_leaves_the_data_and_the_next_one_cleans_up(prepared, tmp_path):
    data_dir, folder, before = prepared
    marker = tmp_path / "marker"
    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, str(data_dir), str(marker)], cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the child never reached the middle of its preparation"
        partial = [p for p in data_dir.iterdir() if p.name != "tinystories"]
        assert partial and any(f.stat().st_size for p in partial for f in p.iterdir())  # half-made, beside it
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert snapshot(folder) == before
    assert [p for p in data_dir.iterdir() if p.name != "tinystories"] == partial  # what kill -9 left

    source = tmp_path / "other.jsonl"
    source.write_text("".join(json.dumps({"text": f"New story {i}."}) + "\n" for i in range(30)))
    ensure_prepared("tinystories", data_dir, input_path=source, log=lambda *a: None)
    assert sorted(p.name for p in data_dir.iterdir()) == ["tinystories"]  # the stale sibling is gone
    assert json.loads((folder / "meta.json").read_text())["source"] == str(source)


# ----------------------------------------------------------------------------
# A .txt input, streamed

# sha256 of train.bin and val.bin prepared from Tiny Shakespeare by the code
# before streaming (commit a0fe8eb, which held the whole text in memory):
#   ensure_prepared("shakespeare", d, input_path=<input.txt>, num_workers=1 and 2)
#   hashlib.sha256((folder / "train.bin").read_bytes()).hexdigest(), then val.bin
SHAKESPEARE_TRAIN_SHA256 = "502a2bdc8210d1ac5d5674867cb74467dd31db575d25cf6dbb08c8bdbea8680f"
SHAKESPEARE_VAL_SHA256 = "68a53422394c26a655ebe641f5c6f49888e8f4e45fe5d6f02abda63ba3ebd65b"


@pytest.mark.parametrize("chunk_chars, workers", [(None, 2), (40_000, 1), (7_919, 2)])
def test_streamed_text_gives_the_same_tokens(tmp_path, shakespeare_path, monkeypatch, chunk_chars, workers):
    """In pieces of any size (here down to 7,919 characters, ~140 pieces,
    cut anywhere: the pieces read need not end at a line), the same
    train.bin and val.bin as tokenizing the whole text."""
    if chunk_chars:
        monkeypatch.setattr(prepare_data, "TEXT_CHUNK_CHARS", chunk_chars)
        monkeypatch.setattr(data_sources, "READ_CHARS", chunk_chars // 3)
    folder = ensure_prepared("shakespeare", tmp_path, input_path=shakespeare_path, num_workers=workers,
                             log=lambda *a: None)
    digests = [hashlib.sha256((folder / f"{s}.bin").read_bytes()).hexdigest() for s in ("train", "val")]
    assert digests == [SHAKESPEARE_TRAIN_SHA256, SHAKESPEARE_VAL_SHA256]


@pytest.mark.parametrize("chunk_chars", [5, 64, 333])
def test_streamed_text_keeps_tricky_whitespace(tmp_path, monkeypatch, chunk_chars):
    """Runs of blank lines and spaces, which change their tokens when cut
    inside: streamed in tiny pieces, the tokens of each split whole."""
    from gpt2.data.tokenizer import tokenize

    text = "a\n\n\nb  \n c\r\nd\n\te\n" * 50 + "word\nword\n\n" * 50 + "naïve café 日本語\n" * 20 + "end  \n\n"
    path = tmp_path / "tricky.txt"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(prepare_data, "TEXT_CHUNK_CHARS", chunk_chars)
    monkeypatch.setattr(data_sources, "READ_CHARS", 7)  # cuts inside multi-byte characters too
    folder = ensure_prepared("shakespeare", tmp_path / "data", input_path=path, num_workers=1, log=lambda *a: None)
    n_train = int(len(text) * 0.9)
    for split, part in (("train", text[:n_train]), ("val", text[n_train:])):
        assert (folder / f"{split}.bin").read_bytes() == tokenize(part, num_workers=1).tobytes()


def test_non_utf8_text_names_the_byte(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes("é".encode() * 700_000 + b"\xc3")  # cut inside a character, past the first read
    with pytest.raises(DataError, match=r"bad.txt is not UTF-8 text \(byte 1400000\)"):
        ensure_prepared("shakespeare", tmp_path / "data", input_path=path, log=lambda *a: None)


# The peak resident memory of this process image: VmHWM, not getrusage's
# ru_maxrss, which Linux carries over an exec from the process that forked
# it (here the test process, whose own peak grows as it writes the inputs).
MEASURE_CHILD = """
import sys
from gpt2.data import prepare, sources
prepare.TEXT_CHUNK_CHARS = 1 << 18
sources.READ_CHARS = 1 << 16
prepare.ensure_prepared("shakespeare", sys.argv[2], input_path=sys.argv[1], num_workers=1, log=lambda *a: None)
with open("/proc/self/status") as f:
    print(next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:")))
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmHWM from Linux's /proc")

def test_preparing_a_text_does_not_hold_it_in_memory(tmp_path, shakespeare_path):
    """Tiny Shakespeare once (1.1 MB) and 8 times (8.9 MB), read in 64 K and
    tokenized in 256 K-character pieces: the same peak resident memory.
    (Held whole, the larger text raised it by 20 MB.)"""
    text = shakespeare_path.read_text()
    peaks = {}
    for copies in (1, 8):
        path = tmp_path / f"x{copies}.txt"
        path.write_text(text * copies)
        result = subprocess.run([sys.executable, "-c", MEASURE_CHILD, str(path), str(tmp_path / f"data{copies}")],
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        peaks[copies] = int(result.stdout.split()[-1])
    grown = peaks[8] - peaks[1]
    assert grown < path.stat().st_size / 4, f"peak resident memory grew {grown / 1e6:.1f} MB for 7.8 MB more text"
