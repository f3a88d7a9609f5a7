"""Docs that cannot drift: README.md and docs/*.md are checked against the code.

- every `make <target>` named exists in the Makefile and in `make help`;
- every `--flag` exists in the parser of the tool on whose command line it
  appears (train.py, sample, prepare_data, a script); a flag with no command
  around it must exist in at least one tool's parser;
- every CONFIG_* (or bare Kconfig symbol in code) names a symbol of the tree;
- every relative link and image resolves;
- every error quoted in the docs (a code line starting `error:`) is a string
  the code can print: it matches one of the source's string literals, with
  each f-string field read as "anything".

And help everywhere: every Kconfig entry has help, train.py --help shows each
option's range and the first sentence of its help, `make help` lists every
target of the Makefile.
"""

import argparse
import ast
import importlib
import re
import sys
from functools import lru_cache

import kconfiglib
import pytest

from lib.kconfig import REMOVED_SYMBOLS, REPO_ROOT, help_text, int_range, load_tree
from lib.options import options
from scripts.make_help import targets as help_targets

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]

# The modules whose parsers own the flags of each command; the key is how
# the command appears in the docs (a make target, a path, a module).
TRAIN, SAMPLE, PREPARE = ("gpt2.train",), ("gpt2.sample", "scripts.sample"), ("gpt2.prepare_data",)
TOOLS = {
    "gpt2/train.py": TRAIN, "gpt2.train": TRAIN, "make train": TRAIN, "make sweep": TRAIN,
    "gpt2/sample.py": SAMPLE, "gpt2.sample": SAMPLE, "make sample": SAMPLE, "scripts.sample": SAMPLE,
    "gpt2/prepare_data.py": PREPARE, "gpt2.prepare_data": PREPARE,
    "make export": ("scripts.export",), "make bench": ("scripts.bench.bench",),
    "make gpu-check": ("scripts.gpu_check.check",), "scripts.gpu_check": ("scripts.gpu_check.check",),
    "make wandb-sync": ("scripts.tracking.wandb_sync",), "make reproduce": ("scripts.experiments.reproduce",),
    "make wheelhouse": ("scripts.wheelhouse",),
    "make eval": ("scripts.eval", "gpt2.eval.cli"), "gpt2/eval.py": ("gpt2.eval.cli",),
}
SCRIPT_MODULES = ["scripts.bench.bench", "scripts.bench.step", "scripts.configure", "scripts.experiments.report",
                  "scripts.experiments.reproduce", "scripts.experiments.sweep", "scripts.export",
                  "scripts.genconfig", "scripts.gpu_check.check", "scripts.launch", "scripts.sample",
                  "scripts.tracking.replay_journal", "scripts.tracking.trackio_show", "scripts.tracking.wandb_sync",
                  "scripts.wheelhouse", "scripts.checks.pretrained_check", "scripts.eval"]
# Commands whose own flags are not ours (pip's --index-url, torchrun's
# --nproc-per-node, #SBATCH lines): on such a segment of a command line the
# flags before one of our commands are theirs; in prose, a flag no parser
# has is theirs when the line names one of them.
FOREIGN = re.compile(r"(?:^|\s)(?:pip3?|torchrun|srun|sbatch|#SBATCH|git|curl|apt-get|trackio|wandb|docker|"
                     r"kconfig-\w+|uv|pytest|-m pytest)(?=\s|$)")
FOREIGN_PROSE = re.compile(r"\b(pip|torchrun|SLURM|sbatch|srun|wandb sync|trackio show|kconfig-\w+)\b")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


class _Captured(Exception):
    def __init__(self, parser):
        self.parser = parser


@lru_cache(maxsize=None)
def flags_of(module_name):
    """Every option string of the parser `module_name`'s main() builds (the
    parse call is intercepted: nothing runs)."""
    # train.py's parser is gpt2/cli.py's (its main() pre-parses --config first)
    module = importlib.import_module("gpt2.cli" if module_name == "gpt2.train" else module_name)
    builder = getattr(module, "build_parser", None)
    original = argparse.ArgumentParser.parse_known_args

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    parsers = []
    argparse.ArgumentParser.parse_known_args = capture
    saved_argv = sys.argv
    try:
        sys.argv = [module_name, "--help"]
        try:
            if builder is not None:
                parsers.append(builder() if builder.__code__.co_argcount == 0 or builder.__defaults__
                               else builder(load_tree()))
            else:
                module.main(["--help"])
        except _Captured as captured:
            parsers.append(captured.parser)
    finally:
        argparse.ArgumentParser.parse_known_args = original
        sys.argv = saved_argv
    assert parsers, f"no parser found in {module_name}"
    found = set()
    for parser in parsers:
        stack = [parser]
        while stack:
            current = stack.pop()
            for action in current._actions:
                found.update(action.option_strings)
                if isinstance(action, argparse._SubParsersAction):
                    stack.extend(action.choices.values())
    return frozenset(found)


def all_flags():
    return frozenset().union(*(flags_of(name) for name in {*SCRIPT_MODULES, "gpt2.train", "gpt2.sample",
                                                             "gpt2.prepare_data", "gpt2.eval.cli"}))


def code_lines(path):
    """[(line number, code text)]: fenced and indented code lines (a
    backslash continues a line), then inline `code` spans of the prose."""
    found, fenced, pending = [], False, None
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or (line.startswith("    ") and line.strip() and not re.match(r"\s*([-*]|\d+\.)\s", line)):
            text = line.strip()
            if pending:
                text, number = pending[1] + " " + text, pending[0]
            if text.endswith("\\"):
                pending = (number, text[:-1])
                continue
            pending = None
            found.append((number, text))
        else:
            found.extend((number, span) for span in re.findall(r"`([^`\n]+)`", line))
    return found


def doc_code():
    return [(path, number, text) for path in DOCS for number, text in code_lines(path)]


def where(path, number):
    return f"{path.relative_to(REPO_ROOT)}:{number}"


# ----------------------------------------------------------------------------
# make targets


def makefile_targets():
    text = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    return {match.group(1) for match in re.finditer(r"^([A-Za-z0-9_.%-]+)\s*:(?!=)", text, re.M)}


def target_matches(name, known):
    return name in known or any(t.endswith("%") and name.startswith(t[:-1]) and name != t[:-1] for t in known)


def test_make_help_lists_every_target_clean_included():
    phony = re.search(r"^\.PHONY:(.*?)(?<!\\)$", (REPO_ROOT / "Makefile").read_text(), re.M | re.S).group(1)
    listed = {target for target, _ in help_targets(REPO_ROOT / "Makefile")}
    missing = set(phony.replace("\\", " ").split()) - listed
    assert "clean" in listed and not missing, f"add a `## text` to the rules of: {sorted(missing)}"
    assert "defconfig-<name>" in listed


def test_every_make_target_in_the_docs_exists():
    known = makefile_targets()
    listed = {target.replace("<name>", "%") for target, _ in help_targets(REPO_ROOT / "Makefile")}
    stale = []
    for path, number, text in doc_code():
        for name in re.findall(r"(?:^|[\s;(&|])make ([a-z][a-z0-9-]*(?:<\w+>)?)", text):
            name = re.sub(r"<\w+>$", "%", name)
            if not (target_matches(name, known) and target_matches(name, listed)):
                stale.append(f"{where(path, number)}: make {name}")
    assert not stale, "no such target in the Makefile / `make help`:\n" + "\n".join(stale)


# ----------------------------------------------------------------------------
# flags


def owners(text):
    """[(flags text, modules)] of one command line, shell segment by segment
    (&&, ;, |): the flags after each of our commands belong to it; flags
    before one, on a foreign command's segment, to that command; with no
    command at all, (text, None): any parser."""
    text = re.sub(r"""\b(?!ARGS=)[A-Z_]+=(["']).*?\1""", "", text)  # VAR="..." (TORCH_SPEC) holds no flags of ours
    return [piece for segment in re.split(r"\s(?:&&|\|\||;|\|)\s|;\s", text) for piece in _owners(segment)]


def _owners(text):
    keys = sorted(TOOLS, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(key) + r"(?![\w/-])" for key in keys)
                         + r"|(?:-m |python3? |\.venv/bin/python )(scripts[./][\w./]+?)(?:\.py)?(?=\s|$)")
    hits = list(pattern.finditer(text))
    if not hits:
        return [] if FOREIGN.match(text) else [(text, None)]
    pieces = [] if FOREIGN.match(text) else [(text[:hits[0].start()], None)]
    for hit, after in zip(hits, [*hits[1:], None]):
        segment = text[hit.end():after.start() if after else len(text)]
        if hit.group(1):
            module = hit.group(1).replace("/", ".")
            modules = (module,) if module in SCRIPT_MODULES else (f"{module}.check",) if \
                f"{module}.check" in SCRIPT_MODULES else None
            pieces.append((segment, modules))
        else:
            pieces.append((segment, TOOLS[hit.group(0)]))
    return pieces


def paragraphs(path):
    """[(first line number, text)] of the blocks between blank lines."""
    found, start, block = [], 1, []
    for number, line in enumerate([*path.read_text(encoding="utf-8").splitlines(), ""], 1):
        if line.strip():
            start, block = (number, [line]) if not block else (start, [*block, line])
        elif block:
            found.append((start, "\n".join(block)))
            block = []
    return found


def test_every_flag_in_the_docs_exists_in_its_tools_parser():
    everything = all_flags()
    stale = []
    prose = {}  # (path, line number) -> its paragraph
    for path in DOCS:
        for start, paragraph in paragraphs(path):
            for offset in range(paragraph.count("\n") + 1):
                prose[(path, start + offset)] = paragraph
    for path, number, text in doc_code():
        for segment, modules in owners(text):
            known = everything if modules is None else frozenset().union(*(flags_of(m) for m in modules))
            for flag in FLAG.findall(segment):
                if flag not in known and modules is None and FOREIGN_PROSE.search(prose[(path, number)]):
                    continue  # pip's --no-deps, SLURM's --requeue, wandb's --id, named in their prose
                if flag not in known:
                    tool = "any tool" if modules is None else "/".join(modules)
                    stale.append(f"{where(path, number)}: {flag} ({tool}) in: {text}")
    assert not stale, "flags the docs name that no parser has:\n" + "\n".join(stale)


# ----------------------------------------------------------------------------
# Kconfig symbols


# Environment variables and constants of other programs the docs name.
FOREIGN_NAMES = ("MKL_", "CUBLAS_", "PR_SET_", "OMP_", "CUDA_", "NCCL_", "TORCH_", "WANDB_", "HF_", "TRACKIO_",
                 "SLURM_", "GPT2LAB_", "KCONFIG_", "PYTHON", "NPROC_", "MASTER_")


@lru_cache(maxsize=1)
def source_text():
    """All of the code's text (a name the code reads, such as an environment variable, is no stale symbol)."""
    files = [*REPO_ROOT.glob("Makefile"), *(p for folder in ("gpt2", "lib", "scripts", ".ci")
                                           for p in (REPO_ROOT / folder).rglob("*") if p.is_file())]
    return "\n".join(path.read_text(encoding="utf-8", errors="replace") for path in files)


def test_every_kconfig_symbol_in_the_docs_exists():
    kconf = load_tree()
    names = set(kconf.syms) | {choice.name for choice in kconf.unique_choices if choice.name}
    names |= set(REMOVED_SYMBOLS)  # still recognised in an old .config, with the fix
    stale = []
    for path in DOCS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for name in re.findall(r"\bCONFIG_([A-Z][A-Z0-9_]*[A-Z0-9])", line):
                if name not in names and not name.endswith("_"):
                    stale.append(f"{where(path, number)}: CONFIG_{name}")
    for path, number, text in doc_code():
        for name in re.findall(r"^(?:CONFIG_)?([A-Z][A-Z0-9]*_[A-Z0-9_]+)(?==|$)", text):
            if name not in names and not name.startswith(FOREIGN_NAMES) and \
                    not re.search(rf"\b{name}\b", source_text()):
                stale.append(f"{where(path, number)}: {name}")
    assert not stale, "no such Kconfig symbol:\n" + "\n".join(stale)


# ----------------------------------------------------------------------------
# links


def test_every_relative_link_and_image_resolves():
    broken = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
            target = match.group(1).split("#")[0]
            if not target or re.match(r"[a-z]+:", target):
                continue
            if not (path.parent / target).exists():
                number = text.count("\n", 0, match.start()) + 1
                broken.append(f"{where(path, number)}: {match.group(1)}")
    assert not broken, "links to nothing:\n" + "\n".join(broken)


# ----------------------------------------------------------------------------
# error messages


@lru_cache(maxsize=1)
def message_patterns():
    """A regex per string literal of the code (f-string fields: anything)."""
    patterns = []
    for folder in ("gpt2", "lib", "scripts"):
        for source in (REPO_ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
                if isinstance(node, ast.JoinedStr):
                    parts = [re.escape(value.value) if isinstance(value, ast.Constant) else ".*"
                             for value in node.values]
                    patterns.append("".join(parts))
                elif isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) > 8:
                    patterns.append(re.escape(node.value) + ".*")
    return [re.compile(pattern, re.S) for pattern in patterns if len(pattern.replace(".*", "")) > 8]


def printable(message):
    """The code can print `message`: some literal matches it whole, or one
    starting with "error: " (or with nothing) matches it from its start."""
    for pattern in message_patterns():
        if pattern.fullmatch(message) or pattern.fullmatch("error: " + message):
            return True
    return False


def test_every_quoted_error_message_is_one_the_code_prints():
    stale = []
    for path, number, text in doc_code():
        if text.startswith("error: "):
            message = text[len("error: "):]
            if not printable(message):
                stale.append(f"{where(path, number)}: {text}")
    assert not stale, "no string in the code prints:\n" + "\n".join(stale)


# ----------------------------------------------------------------------------
# help everywhere


def test_every_kconfig_entry_has_help():
    kconf = load_tree()
    bare = [f"{node.filename}:{node.linenr}: {node.item.name or 'choice'}" for node in kconf.node_iter()
            if isinstance(node.item, (kconfiglib.Symbol, kconfiglib.Choice)) and node.prompt and not node.help]
    assert not bare, "add a help text to:\n" + "\n".join(bare)


def test_train_help_shows_each_options_range_and_first_sentence(monkeypatch):
    from gpt2.cli import build_parser

    monkeypatch.setenv("COLUMNS", "100000")  # one line per option: no hyphen broken by the wrap
    text = " ".join(build_parser().format_help().split())
    kconf = load_tree()
    for option in (option for option in options(kconf) if option.train_flag):
        assert f"[Kconfig {option.name}]" in text, option.name
        sentence = re.match(r"(.+?[.!?])(?:\s|$)", " ".join(help_text(option.item).split())).group(1)
        if not sentence.startswith("A float in"):
            assert sentence in text, (option.name, sentence)
        if option.kind == "int" and int_range(option.item):
            low, high = int_range(option.item)
            assert f"Range {low}..{high}. [Kconfig {option.name}]" in text, option.name


@pytest.mark.parametrize("renamed", ["--max-iters", "make sample"])
def test_the_checks_catch_a_renamed_flag_or_target(renamed, tmp_path, monkeypatch):
    """Rename a flag / target the README names (in a copy of the doc): the
    check above fails, naming the line."""
    doc = tmp_path / "README.md"
    original = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert renamed in original
    doc.write_text(original.replace(renamed, renamed.replace("max-iters", "max-iterations")
                                    .replace("sample", "samples")), encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "DOCS", [doc])
    monkeypatch.setattr(sys.modules[__name__], "where", lambda path, number: f"README.md:{number}")
    check = test_every_flag_in_the_docs_exists_in_its_tools_parser if renamed.startswith("--") \
        else test_every_make_target_in_the_docs_exists
    with pytest.raises(AssertionError, match="max-iterations|make samples"):
        check()


TEST_REFERENCE = re.compile(r"tests/(\w+\.py)::(\w+)")


def test_every_test_the_docs_name_exists():
    """A claim backed by `tests/<file>.py::<test>` names a test that is there."""
    missing = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for file, name in TEST_REFERENCE.findall(line):
                path = REPO_ROOT / "tests" / file
                if not path.is_file() or not re.search(rf"^def {name}\(", path.read_text(), re.M):
                    missing.append(f"{doc.relative_to(REPO_ROOT)}:{number}: tests/{file}::{name}")
    assert not missing
