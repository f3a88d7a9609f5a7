"""Where the text of each dataset comes from: a download, a Hugging Face Hub
stream, or a local .txt / .jsonl / .parquet file given with --input.

A source is either one TextSource (a whole text, split into train/val by
characters) or a DocumentSource (a stream of documents, split by document).
Nothing here tokenizes or writes token files; gpt2/data/prepare.py does.
"""

import codecs
import hashlib
import http.client
import itertools
import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from lib.atomic import write_bytes_atomically
from lib.errors import UserError, first_line

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
# The file is 1.1 MB; a connection that cannot deliver it in this time is
# better reported than waited on.
DOWNLOAD_TIMEOUT_S = 30
INPUT_HINT = "pass --input FILE (train.py: --data-input FILE)"
# A text file is read and decoded in pieces of this many bytes (about as
# many characters): never the whole file at once (inputs may be GBs).
READ_CHARS = 1 << 22

REPO_ROOT = Path(__file__).resolve().parents[2]
# Where tests and tools look for Tiny Shakespeare's input.txt, in order:
# $GPT2LAB_SHAKESPEARE, what `make train` downloaded (DATA_DIR=data), then the
# copy beside the repository that CI reads.
SHAKESPEARE_ENV = "GPT2LAB_SHAKESPEARE"
SHAKESPEARE_IN_REPO = Path("data") / "shakespeare" / "input.txt"
SHAKESPEARE_SHARED = Path("..") / "shared" / "data" / "tinyshakespeare" / "input.txt"


class DataError(UserError):
    """A problem the user can fix (missing file, no network, bad format);
    the message is one line saying what is wrong and how to fix it."""


@dataclass(frozen=True)
class TextSource:
    """One whole text, a UTF-8 file read in pieces (pieces()); the first 90%
    of its `characters` train, the rest validate."""

    description: str  # URL or absolute path, recorded in meta.json
    sha256: str
    path: Path
    characters: int
    size: int  # bytes

    def pieces(self):
        """The text in consecutive pieces of about READ_CHARS characters,
        cut anywhere (even inside a line)."""
        decoder = codecs.getincrementaldecoder("utf-8")()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(READ_CHARS), b""):
                yield decoder.decode(block)
        yield decoder.decode(b"", final=True)


@dataclass(frozen=True)
class DocumentSource:
    """A stream of documents (possibly endless), each joined to the next by
    <|endoftext|>; sha256 is None when only known after streaming."""

    description: str
    sha256: Optional[str]
    documents: Iterable[str]


@dataclass(frozen=True)
class UrlText:
    """A plain-text file downloaded once into the dataset folder."""

    url: str
    filename: str


@dataclass(frozen=True)
class HubDataset:
    """A Hugging Face Hub dataset, streamed so nothing is downloaded whole."""

    repo: str
    config: Optional[str] = None
    split: str = "train"
    field: str = "text"

    def describe(self):
        config = f"/{self.config}" if self.config else ""
        return f"hf://datasets/{self.repo}{config} ({self.split})"


DATASETS = {
    "shakespeare": UrlText(SHAKESPEARE_URL, "input.txt"),
    "finewebedu": HubDataset("HuggingFaceFW/fineweb-edu", "sample-10BT"),
    "openwebtext": HubDataset("Skylion007/openwebtext"),
    "tinystories": HubDataset("roneneldan/TinyStories"),
}


def file_sha256(path):
    """sha256 of a file's bytes, read in 1 MiB blocks (inputs may be GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _scan_text(path, description, sha256=None):
    """The TextSource of a file, read once in blocks: its characters
    counted (the 90/10 split needs the total before the first token is
    written) and UTF-8 checked, so a binary file is refused before any
    tokenizing; hashed too unless `sha256` is known."""
    decoder, digest = codecs.getincrementaldecoder("utf-8")(), hashlib.sha256()
    characters = offset = 0
    with open(path, "rb") as f:
        for block in itertools.chain(iter(lambda: f.read(READ_CHARS), b""), [None]):  # None: the end
            pending = len(decoder.getstate()[0])  # bytes of a character cut by the last block
            try:
                characters += len(decoder.decode(block or b"", final=block is None))
            except UnicodeDecodeError as exc:
                byte = offset - pending + exc.start
                raise DataError(f"{path} is not UTF-8 text (byte {byte}); convert it to UTF-8") from None
            if block:
                offset += len(block)
                if sha256 is None:
                    digest.update(block)
    return TextSource(description, sha256 or digest.hexdigest(), Path(path), characters, offset)


# ----------------------------------------------------------------------------
# Local files (--input)


# Each reader takes the file's sha256, already computed by the caller (which
# needs it to decide whether to prepare at all), so a large file is not read
# a second time just to hash it.
def read_text_file(path, sha256):
    return _scan_text(path, str(path), sha256)


def _jsonl_texts(path):
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise DataError(f"{path}:{line_no} is not a JSON object; write one object per line") from None
            text = row.get("text") if isinstance(row, dict) else None
            if not isinstance(text, str):
                raise DataError(f'{path}:{line_no} has no string "text" field; write {{"text": ...}} per line')
            yield text


def read_jsonl_file(path, sha256):
    return DocumentSource(str(path), sha256, _jsonl_texts(path))


def _parquet_texts(path):
    import pyarrow  # lazy: only parquet inputs need it
    import pyarrow.parquet

    try:
        table = pyarrow.parquet.ParquetFile(path)
    except pyarrow.ArrowException as exc:
        raise DataError(f"{path} is not a readable parquet file ({exc})") from None
    if "text" not in table.schema_arrow.names:
        raise DataError(f'{path} has no "text" column (columns: {", ".join(table.schema_arrow.names)})')
    for batch in table.iter_batches(columns=["text"]):
        for text in batch.column(0).to_pylist():
            if text is not None:
                yield text


def read_parquet_file(path, sha256):
    return DocumentSource(str(path), sha256, _parquet_texts(path))


# Extension of an --input file -> reader; the same schema as the hub datasets
# (a "text" field per document) so a local shard can stand in for them.
LOCAL_READERS = {
    ".txt": read_text_file,
    ".jsonl": read_jsonl_file,
    ".parquet": read_parquet_file,
}


def check_input_file(input_path):
    """The absolute path of a usable --input file, or DataError."""
    path = Path(input_path).expanduser().resolve()
    if not path.is_file():
        raise DataError(f"input file {input_path} not found; {INPUT_HINT} with an existing file")
    if path.suffix.lower() not in LOCAL_READERS:
        known = ", ".join(LOCAL_READERS)
        suffix = path.suffix or "(none)"
        raise DataError(f"cannot read {input_path}: unknown extension '{suffix}'; use one of {known}")
    return path


def open_local_file(path, sha256):
    """The source in path (from check_input_file), whose sha256 is known."""
    return LOCAL_READERS[path.suffix.lower()](path, sha256)


# ----------------------------------------------------------------------------
# Remote sources


class DownloadError(DataError):
    """A download that failed; `bare` is the message without the hint."""

    def __init__(self, bare, hint):
        super().__init__(f"{bare}; {hint}")
        self.bare = bare


def download(url, dest, hint=None):
    """Fetch url into dest atomically (lib/atomic.py): an interrupted
    download never looks like a finished one.  `hint`: how to do without
    the network (default: pass --input)."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read()
        write_bytes_atomically(dest, data)
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(f"cannot download {url} ({reason})", hint or f"{INPUT_HINT} with a local copy") from None


def _shown(path):
    """path relative to the working directory when it is below it (data/shakespeare/input.txt)."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def open_url_text(spec, folder):
    path = folder / spec.filename
    if not path.is_file():  # written atomically, so present means complete
        folder.mkdir(parents=True, exist_ok=True)
        download(spec.url, path)
    return _scan_text(path, spec.url)


def find_shakespeare(repo_root=REPO_ROOT, url=SHAKESPEARE_URL):
    """The path of Tiny Shakespeare's input.txt for tests and tools:
    $GPT2LAB_SHAKESPEARE, else <repo>/data/shakespeare/input.txt (what `make
    train` downloads), else <repo>/../shared/data/tinyshakespeare/input.txt;
    with none of them, downloaded once to <repo>/data/shakespeare/input.txt.
    Offline: DataError, one line saying where to put the file."""
    repo_root = Path(repo_root)
    in_repo = repo_root / SHAKESPEARE_IN_REPO
    named = os.environ.get(SHAKESPEARE_ENV)
    if named:
        if not Path(named).expanduser().is_file():
            raise DataError(f"{SHAKESPEARE_ENV}={named}: no such file; point it at Tiny Shakespeare's input.txt "
                            f"or unset it to use {in_repo}")
        return Path(named).expanduser().resolve()
    for path in (in_repo, repo_root / SHAKESPEARE_SHARED):
        if path.is_file():
            return path.resolve()
    in_repo.parent.mkdir(parents=True, exist_ok=True)
    download(url, in_repo, f"offline, put Tiny Shakespeare's input.txt at {in_repo} (or set {SHAKESPEARE_ENV}=FILE)")
    return in_repo.resolve()


def _hub_texts(spec):
    try:
        import datasets  # slow to import (seconds): only for hub datasets
    except ImportError:
        raise DataError(f"streaming {spec.repo} needs: pip install datasets; or {INPUT_HINT}") from None
    try:
        rows = datasets.load_dataset(spec.repo, spec.config, split=spec.split, streaming=True)
        for row in rows:
            yield row[spec.field]
    except KeyError:
        raise DataError(f'{spec.describe()} has no "{spec.field}" field') from None
    except Exception as exc:  # network, offline mode, auth, renamed dataset: all fixed by the user
        reason = first_line(exc)
        message = f"cannot stream {spec.describe()} ({reason}); check the network or {INPUT_HINT}"
        raise DataError(message) from None


def open_hub_stream(spec, folder):
    return DocumentSource(spec.describe(), None, _hub_texts(spec))


# How each kind of dataset is opened; tests swap in local stand-ins.
OPENERS = {
    UrlText: open_url_text,
    HubDataset: open_hub_stream,
}


def open_dataset(dataset, folder):
    """Open the default (remote) source of a dataset; may download into
    folder (a sibling of <data dir>/<dataset> while it is prepared).  Offline,
    the one line names where the file goes."""
    spec = DATASETS[dataset]
    try:
        return OPENERS[type(spec)](spec, folder)
    except DownloadError as err:
        where = _shown(Path(folder).parent / dataset / spec.filename)
        raise DataError(f"{err.bare}; offline, put the file at {where}, or set DATA_INPUT "
                        "(--input FILE; train.py: --data-input FILE)") from None
