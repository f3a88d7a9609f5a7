"""Whether train.bin and val.bin still hold the tokens meta.json recorded.

meta.json keeps each token file's sha256 (hashed as it was written), size
and mtime.  A run's start hashes a file only when its size or mtime is not
what meta.json saw (nothing is read for an untouched folder); `make
reproduce` hashes both every time, since a file can be altered with its
size and mtime kept.  The cost: sha256 of a 200 MB file already in the page
cache took 0.49-0.59 s (340-410 MB/s, one core of a 2-core VM at load ~9),
so about 2.5-3 s per GB of tokens, plus reading it from disk when it is not
cached.
"""

import hashlib

from gpt2.data.sources import file_sha256

SPLITS = ("train", "val")


def file_names():
    return [f"{split}.bin" for split in SPLITS]


def files_record(folder, digests):
    """meta.json's "files": {name: {sha256, bytes, mtime_ns}} of the token
    files just written into `folder`; `digests`: {split: sha256 hex}."""
    record = {}
    for split in SPLITS:
        stat = (folder / f"{split}.bin").stat()
        record[f"{split}.bin"] = {"sha256": digests[split], "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return record


def _changed(path, seen):
    stat = path.stat()
    return (stat.st_size, stat.st_mtime_ns) != (seen.get("bytes"), seen.get("mtime_ns"))


def verify_tokens(folder, meta, always=False):
    """(tokens_sha256 of the files as they are now, or None when they were
    not hashed; the names of the files that are not what meta.json
    recorded).  Hashed when `always`, else only files whose size or mtime
    changed; data prepared before meta.json kept "files" is hashed only
    when `always`, against its tokens_sha256 (which cannot name the file)."""
    files = meta.get("files")
    if not isinstance(files, dict) or not all(isinstance(files.get(n), dict) for n in file_names()):
        if not always or not meta.get("tokens_sha256"):
            return None, []
        digests = [bytes.fromhex(file_sha256(folder / name)) for name in file_names()]
        now = hashlib.sha256(b"".join(digests)).hexdigest()
        return now, ([] if now == meta["tokens_sha256"] else file_names())
    if not always and not any(_changed(folder / name, files[name]) for name in file_names()):
        return None, []
    digests = {name: file_sha256(folder / name) for name in file_names()}
    altered = [name for name in file_names() if digests[name] != files[name].get("sha256")]
    now = hashlib.sha256(b"".join(bytes.fromhex(digests[name]) for name in file_names())).hexdigest()
    return now, altered
