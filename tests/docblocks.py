"""Run the code blocks of README.md and docs/*.md (issue 20): the machinery behind tests/test_docs_blocks.py.

Why Sybil (10.x): it is the maintained library for testing examples in documentation; its Markdown lexer finds the
fenced blocks (with their exact line numbers for the test ids), and its Python evaluator runs a ```python block in a
namespace shared by the blocks of one document, so a snippet can use what an earlier one made (quickstart trains,
then explains). pytest-markdown-docs only runs Python blocks, one test per file or block, without a place for our
shell blocks. We collect Sybil's examples as parametrized pytest items (not through Sybil's own collector) so that
the suite's conftest (the offline guard, the per-test model store) applies and `pytest tests/` includes them.

A ```bash block is run line by line by a small interpreter written here (no shell: `xray-xai` commands go to the
click command in this process, 10x faster than a subprocess that imports torch each time): `\\` continuations,
`#` comments, `&&` and `;`, `VAR=value` (alone, after `export`, or before a command), `$VAR` / `${VAR}`, `~`, globs,
`> FILE` and `| PROGRAM` (a real subprocess, e.g. jq). Other programs (cat, ls, python) run as real subprocesses.

Tiny sizes come from ONE mechanism, :func:`shrink_args` / :func:`shrink_python`: the test rewrites the documented
command line (or the snippet's keyword arguments) before running it, e.g. `--epochs 8` -> `--epochs 1`; the product
code knows nothing about it. Data and models a block refers to without making them (`phantoms`, `MURA-v1.1`,
`film.png`, `../shared/data/fracatlas`, a trained `densenet-full`...) are laid out by :class:`DocWorld` once per
session and linked into each document's own working folder and model store.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sybil import Document, Example, Lexeme
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser

REPO = Path(__file__).resolve().parents[1]
FRACATLAS = REPO.parent / "shared" / "data" / "fracatlas"

#: The marker, alone on the line right before a fence, for a block CI cannot run (a GPU, a MURA download, a Ray
#: cluster, hours of CPU, a server that runs until Ctrl-C): the test is collected and skipped with REASON.
NOT_IN_CI = re.compile(r"^<!-- docs: not-in-ci (?P<reason>\S.*?) -->$")
#: Languages that run; every other fence (text, toml, none) is output or an illustration.
RUN_LANGUAGES = ("bash", "python")
#: Fence languages refused outright: a block meant to run must say bash or python, so none escapes the suite.
AMBIGUOUS_LANGUAGES = ("sh", "shell", "console", "py", "python3", "pycon", "zsh")


def documents() -> list[Path]:
    """README.md and every docs/*.md, found afresh (docs added by anyone run too)."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


# --------------------------------------------------------------------------------------------- parsing (Sybil)


@dataclass
class Block:
    doc: Path
    line: int
    language: str
    source: str
    skip_reason: str | None
    example: Example = field(repr=False)

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(REPO).as_posix()}:{self.line}"


_PARSED: dict[Path, Document] = {}


def _evaluate_bash(example: Example) -> None:
    shell = example.namespace["__docs_shell__"]
    shell.run_block(example.parsed)


def parse(doc: Path) -> Document:
    """The Sybil document for ``doc`` (parsed once, so its namespace carries state from block to block)."""
    if doc not in _PARSED:
        _PARSED[doc] = Document.parse(
            str(doc), PythonCodeBlockParser(), CodeBlockParser(language="bash", evaluator=_evaluate_bash)
        )
    return _PARSED[doc]


def blocks(doc: Path) -> list[Block]:
    document = parse(doc)
    text = document.text
    found = []
    for example in document.examples():
        start = example.region.start
        line = text.count("\n", 0, start) + 1
        fence = text[start : text.index("\n", start)]
        language = fence.strip("`").strip().split()[0]
        before = [ln.strip() for ln in text[:start].splitlines() if ln.strip()]
        marker = NOT_IN_CI.match(before[-1]) if before else None
        found.append(Block(doc, line, language, str(example.parsed), marker and marker["reason"], example))
    return found


def fences(doc: Path) -> list[tuple[int, str]]:
    """(line, language) of every opening fence, by a plain scan independent of Sybil (the completeness check)."""
    out, inside = [], False
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            if not inside:
                out.append((number, line[3:].strip().split(" ")[0] if line[3:].strip() else ""))
            inside = not inside
    return out


def markers(doc: Path) -> list[int]:
    return [
        n for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1) if NOT_IN_CI.match(line.strip())
    ]


# ----------------------------------------------------------------------------------- the one shrinking mechanism

#: CLI option -> the value used in the suite (applied when the documented value is larger), per command.
_CLI_CAPS: dict[str, dict[str, int]] = {
    "synth": {"--n-studies": 16, "--image-size": 64},
    "train": {"--epochs": 1, "--image-size": 32, "--early-stop": 1},
    "audit": {"--n": 3, "--steps": 4, "--sanity-stages": 1, "--curve-check": 1},
    "explain": {"--limit": 3},
    "evaluate": {"--bootstrap": 20},
}
#: options added when the documented command leaves them at a default too big for the suite
_CLI_ADD: dict[str, dict[str, str]] = {
    "train": {"--image-size": "32", "--max-images": "24"},
    "audit": {"--n": "3", "--steps": "4", "--sanity-stages": "1", "--curve-check": "1"},
    "explain": {"--limit": "3"},
    "evaluate": {"--bootstrap": "20"},
    "cluster": {},
}
#: a document whose example needs more than the caps above, with the reason (the values replace the caps there)
_DOC_CAPS: dict[str, dict[str, dict[str, int]]] = {
    # calibrate fits on val, which must hold films of both classes: 16 phantom studies leave 3 val films, one class
    "calibration.md": {"synth": {"--n-studies": 60}},
}
#: Python keyword argument -> cap, for snippets (``api.train(..., epochs=3)`` -> ``epochs=1``)
_PY_CAPS = {"epochs": 1, "n_studies": 16, "image_size": 64, "n": 3, "steps": 4, "limit": 3, "n_steps": 4}


def shrink_args(args: list[str], doc: str = "") -> list[str]:
    """The documented ``xray-xai`` arguments at the suite's tiny sizes (see the tables above; ``doc``: the document)."""
    if not args:
        return args
    command, out = args[0], list(args)
    caps = {**_CLI_CAPS.get(command, {}), **_DOC_CAPS.get(doc, {}).get(command, {})}
    for i, token in enumerate(out[:-1]):
        if token in caps and out[i + 1].isdigit() and int(out[i + 1]) > caps[token]:
            out[i + 1] = str(caps[token])
    if command == "demo" and "--quick" not in out:
        out.append("--quick")
    for option, value in _CLI_ADD.get(command, {}).items():
        if option == "--limit" and "--data" not in out:
            continue
        if option not in out and not any(t.startswith(option + "=") for t in out):
            out += [option, value]
    return out


def shrink_python(source: str) -> str:
    """The snippet with its size keyword arguments capped (``epochs=3`` -> ``epochs=1``)."""

    def cap(match: re.Match[str]) -> str:
        name, value = match["name"], int(match["value"])
        return f"{name}={min(value, _PY_CAPS[name])}"

    return re.sub(r"\b(?P<name>" + "|".join(_PY_CAPS) + r")=(?P<value>\d+)\b", cap, source)


# ------------------------------------------------------------------------------------------- the shell of a doc


class BlockFailed(AssertionError):
    pass


_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_ASSIGN = re.compile(r"^[A-Za-z_]\w*=")


class DocShell:
    """Runs the bash blocks of one document in its working folder with its environment (variables persist)."""

    def __init__(self, cwd: Path, env: dict[str, str], doc: str = "") -> None:
        self.cwd, self.env, self.doc = cwd, dict(env), doc

    # lines -> commands
    def run_block(self, source: str) -> None:
        for line in self._logical_lines(source):
            for command in self._split(line, "&&", ";"):
                self._run(command, line)

    @staticmethod
    def _logical_lines(source: str) -> Iterator[str]:
        joined = re.sub(r"\\\n", " ", source)
        for line in joined.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                yield line

    def _expand_vars(self, text: str) -> str:
        def substitute(match: re.Match[str]) -> str:  # $(...): the one construct handed to a real bash
            done = subprocess.run(
                ["bash", "-c", match[1]], cwd=self.cwd, env=self.env, capture_output=True, text=True, check=True
            )
            return done.stdout.strip()

        text = re.sub(r"\$\(([^)]*)\)", substitute, text)
        return _VAR.sub(lambda m: self.env.get(m[1] or m[2], ""), text)

    def _tokens(self, line: str) -> list[str]:
        lexer = shlex.shlex(self._expand_vars(line), posix=True, punctuation_chars="|&;<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        return list(lexer)

    def _split(self, line: str, *separators: str) -> list[list[str]]:
        parts: list[list[str]] = [[]]
        for token in self._tokens(line):
            if token in separators:
                parts.append([])
            else:
                parts[-1].append(token)
        return [p for p in parts if p]

    def _word(self, token: str) -> list[str]:
        if token == "~" or token.startswith("~/"):
            token = self.env["HOME"] + token[1:]
        if any(c in token for c in "*?[") and not _ASSIGN.match(token):
            matches = sorted(glob.glob(token, root_dir=self.cwd))
            return matches or [token]
        return [token]

    # one command
    def _run(self, tokens: list[str], line: str) -> None:
        env = dict(self.env)
        while tokens and _ASSIGN.match(tokens[0]):
            name, value = tokens[0].split("=", 1)
            env[name] = self._word(value)[0] if value.startswith("~") else value
            tokens = tokens[1:]
        if tokens[:1] == ["export"]:
            tokens = tokens[1:]
            for assignment in tokens:
                name, value = assignment.split("=", 1)
                env[name] = value
            self.env.update({k: v for k, v in env.items()})
            return
        if not tokens:  # VAR=value alone: a shell variable for the next lines
            self.env = env
            return
        pipeline = [[]]  # type: list[list[str]]
        redirect = None
        it = iter(tokens)
        for token in it:
            if token == "|":
                pipeline.append([])
            elif token == ">":
                redirect = next(it)
            else:
                pipeline[-1].extend(self._word(token))
        output = self._program(pipeline[0], env, line)
        for program in pipeline[1:]:
            output = self._subprocess(program, env, line, stdin=output)
        if redirect is not None:
            (self.cwd / redirect).write_text(output, encoding="utf-8")

    def _program(self, argv: list[str], env: dict[str, str], line: str) -> str:
        if argv[0] == "xray-xai" or argv[:3] == ["python", "-m", "xray_xai"]:
            args = argv[1:] if argv[0] == "xray-xai" else argv[3:]
            return self._xray_xai(shrink_args(args, self.doc), env, line)
        return self._subprocess(argv, env, line)

    def _xray_xai(self, args: list[str], env: dict[str, str], line: str) -> str:
        from click.testing import CliRunner

        from xray_xai.cli import main

        saved = os.getcwd()
        os.chdir(self.cwd)
        try:
            result = CliRunner().invoke(main, args, env=env, prog_name="xray-xai")
        finally:
            os.chdir(saved)
        if result.exit_code != 0:
            detail = result.output[-3000:]
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                import traceback

                detail += "".join(traceback.format_exception(result.exception))[-3000:]
            raise BlockFailed(f"`{line.strip()}` ran as `xray-xai {' '.join(args)}`: exit {result.exit_code}\n{detail}")
        return result.stdout

    def _subprocess(self, argv: list[str], env: dict[str, str], line: str, stdin: str | None = None) -> str:
        if argv[0] == "python":
            argv = [sys.executable, *argv[1:]]
        elif shutil.which(argv[0], path=env.get("PATH")) is None:
            raise BlockFailed(f"`{line.strip()}`: program {argv[0]!r} is not installed here")
        done = subprocess.run(
            argv, cwd=self.cwd, env=env, input=stdin, capture_output=True, text=True, timeout=300, check=False
        )
        if done.returncode != 0:
            raise BlockFailed(f"`{line.strip()}`: {argv[0]} exit {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done.stdout


# ------------------------------------------------------------------------------------ the files docs refer to


#: models the docs name without training them first (`--model densenet-full` on phantoms): stored untrained, tiny
SEEDED_MODELS = ("cnn-small", "densenet-full", "densenet-linear", "densenet201", "mobilenet-v2", "efficientnet-lite0")


class DocWorld:
    """The session's shared data, built once: tiny phantoms, a FracAtlas subset, films, a seeded model store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.phantoms = self._phantoms()
        self.store = self._store()
        self.films = self._films()
        self.scans = self._scans()
        self.fracatlas = self._fracatlas()

    def _phantoms(self) -> Path:
        from xray_xai import api

        return Path(api.synth(self.root / "phantoms", n_studies=16, seed=0, image_size=64))

    def _store(self) -> Path:
        import pytest

        import xray_xai
        from xray_xai.models.store import save_model

        store = self.root / "store"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("XRAY_XAI_HOME", str(store))
            for name in SEEDED_MODELS:
                model = self._centred(xray_xai.get_model(name)(image_size=32))
                save_model(model, metadata={"note": "untrained, for the docs"})
        return store

    def _centred(self, model: Any) -> Any:
        """An untrained model whose output bias is shifted so that 3 in 4 phantoms read p(abnormal) >= 0.5:
        the commands that keep only the abnormal calls (cluster, explain --only predicted-abnormal) get films."""
        import torch

        from xray_xai.data.loader import load_batch

        films = [str(p) for p in sorted(self.phantoms.rglob("*.png"))]
        model.eval()
        with torch.no_grad():
            logits = model(load_batch(films, model.preprocessing)).flatten()
            last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
            last.bias -= torch.quantile(logits, 0.25) - 1e-3  # an untrained net's logits can all be equal
        return model

    def _films(self) -> Path:
        import numpy as np
        from PIL import Image

        films = self.root / "films"
        films.mkdir()
        first = sorted(self.phantoms.rglob("*.png"))[0]
        for name in ("film.png", "wrist.png", "view1.png"):
            shutil.copy(first, films / name)
        noise = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
        Image.fromarray(noise).save(films / "view2.png")
        return films

    def _scans(self) -> Path:
        """A `folder` data set: a few phantom films in sub-folders, and labels.csv."""
        scans = self.root / "scans"
        rows = ["path,label"]
        for i, png in enumerate(sorted(self.phantoms.rglob("*.png"))[:8]):
            target = scans / ("wrist" if i % 2 else "elbow") / f"scan{i}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(png, target)
            rows.append(f"{target.relative_to(scans).as_posix()},{int('positive' in png.parent.name)}")
        (scans / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        return scans

    def _fracatlas(self) -> Path | None:
        """A stratified subset of ../shared/data/fracatlas (60 films, linked, not copied), or None when absent."""
        if not (FRACATLAS / "dataset.csv").is_file():
            return None
        lines = (FRACATLAS / "dataset.csv").read_text(encoding="utf-8").splitlines()
        header, rows = lines[0], lines[1:]
        col = header.split(",").index("fractured")
        picked = [r for r in rows if r.split(",")[col] == "1"][:30] + [r for r in rows if r.split(",")[col] == "0"][:30]
        subset = self.root / "shared" / "data" / "fracatlas"
        for row in picked:
            image_id = row.split(",")[0]
            folder = "Fractured" if row.split(",")[col] == "1" else "Non_fractured"
            target = subset / "images" / folder / image_id
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(FRACATLAS / "images" / folder / image_id)
        (subset / "dataset.csv").write_text("\n".join([header, *picked]) + "\n", encoding="utf-8")
        return subset

    def sandbox(self, doc: Path) -> tuple[Path, dict[str, str]]:
        """The working folder and environment of one document, with links to the shared files."""
        name = doc.relative_to(REPO).as_posix().replace("/", "_").removesuffix(".md")
        top = self.root / "docs" / name
        work, home = top / "work", top / "home"
        store = home / ".xray-xai"  # the default store's place, so `~/.xray-xai/models/...` in the docs is real
        work.mkdir(parents=True)
        (home / "data").mkdir(parents=True)
        text = doc.read_text(encoding="utf-8")
        mura = self.phantoms / "MURA-v1.1"
        if not re.search(r"synth\(?\s*\"?phantoms(?![\w-])", text):  # docs that make `phantoms` themselves get none
            (work / "phantoms").symlink_to(self.phantoms)
        (work / "MURA-v1.1").symlink_to(mura)
        (home / "data" / "MURA-v1.1").symlink_to(mura)
        if "demo/phantoms" in text:  # the demo's phantoms, for the commands that follow it (README)
            (work / "demo").mkdir()
            (work / "demo" / "phantoms").symlink_to(self.phantoms)
        (work / "scans").symlink_to(self.scans)
        (work / "films").symlink_to(self.films)
        for film in self.films.iterdir():
            (work / film.name).symlink_to(film)
        if self.fracatlas is not None:
            (top / "shared").symlink_to(self.root / "shared")
            (work / "fracatlas").symlink_to(self.fracatlas)
        for folder in (self.store / "models").iterdir():
            for checkpoint in folder.iterdir():
                (store / "models" / folder.name).mkdir(parents=True, exist_ok=True)
                (store / "models" / folder.name / checkpoint.name).symlink_to(checkpoint)
        env = {k: v for k, v in os.environ.items()}
        env.update(HOME=str(home), XRAY_XAI_HOME=str(store), XRAY_XAI_NO_PROGRESS="1", PWD=str(work))
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / ".shim"), env.get("PYTHONPATH", "")])
        return work, env


def needs_fracatlas(block: Block) -> bool:
    return "shared/data/fracatlas" in block.source or bool(re.search(r"\bfracatlas\b\"?,", block.source))


def matches_any(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def run_block(block: Block, world: DocWorld, monkeypatch: Any) -> None:
    """Run one block in its document's sandbox (made on the document's first block)."""
    namespace = block.example.namespace
    if "__docs_shell__" not in namespace:
        work, env = world.sandbox(block.doc)
        namespace["__docs_shell__"] = DocShell(work, env, Path(block.doc).name)
    shell: DocShell = namespace["__docs_shell__"]
    monkeypatch.chdir(shell.cwd)
    for key in ("HOME", "XRAY_XAI_HOME"):
        monkeypatch.setenv(key, shell.env[key])
    if block.language == "python":
        original = block.example.parsed
        block.example.parsed = Lexeme(shrink_python(str(original)), original.offset, original.line_offset)
    block.example.evaluate()
