"""Every ```bash and ```python block of README.md and docs/*.md runs here (issue 20); see tests/docblocks.py.

One test per block, in document order (a document's blocks share a working folder, a model store, shell variables
and a Python namespace). A block right after `<!-- docs: not-in-ci REASON -->` is collected and skipped with
REASON; the counts are checked, so no block is skipped silently. Sizes are shrunk by rewriting the documented
command (docblocks.shrink_args / shrink_python), never by the product code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from docblocks import (
    AMBIGUOUS_LANGUAGES,
    REPO,
    RUN_LANGUAGES,
    Block,
    DocWorld,
    blocks,
    documents,
    fences,
    markers,
    needs_fracatlas,
    run_block,
    shrink_args,
    shrink_python,
)

ALL_BLOCKS = [block for doc in documents() for block in blocks(doc)]


@pytest.fixture(scope="session")
def doc_world(tmp_path_factory: pytest.TempPathFactory) -> DocWorld:
    return DocWorld(tmp_path_factory.mktemp("docs_world"))


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.id for b in ALL_BLOCKS])
def test_doc_block(block: Block, doc_world: DocWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    if block.skip_reason:
        pytest.skip(f"not-in-ci: {block.skip_reason}")
    if needs_fracatlas(block) and doc_world.fracatlas is None:
        pytest.skip("../shared/data/fracatlas is not beside the repository")
    run_block(block, doc_world, monkeypatch)


def test_every_runnable_block_is_collected() -> None:
    """A plain scan of the fences agrees with what runs: no bash/python block escapes, no marker dangles."""
    for doc in documents():
        name = doc.relative_to(REPO).as_posix()
        found = fences(doc)
        ambiguous = [(line, lang) for line, lang in found if lang in AMBIGUOUS_LANGUAGES]
        assert ambiguous == [], f"{name}: fences {ambiguous} would not run; write ```bash or ```python"
        runnable = [line for line, lang in found if lang in RUN_LANGUAGES]
        collected = [b for b in ALL_BLOCKS if b.doc == doc]
        assert [b.line for b in collected] == runnable, name
        skipped = [b for b in collected if b.skip_reason]
        assert len(markers(doc)) == len(skipped), f"{name}: a not-in-ci marker is not right before a code block"


def test_not_in_ci_blocks_are_counted(capsys: pytest.CaptureFixture[str]) -> None:
    total_markers = sum(len(markers(doc)) for doc in documents())
    skipped = [b for b in ALL_BLOCKS if b.skip_reason]
    assert total_markers == len(skipped)
    assert len(ALL_BLOCKS) - len(skipped) >= 30, "most documented blocks must run in CI"
    with capsys.disabled():
        print(f"\ndocs: {len(ALL_BLOCKS)} code blocks, {len(skipped)} marked not-in-ci")


def test_a_marker_skips_only_its_block(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "# t\n\n<!-- docs: not-in-ci needs a GPU -->\n```bash\nxray-xai train --device cuda\n```\n\n"
        "```python\nx = 1\n```\n\n```text\nnot run\n```\n",
        encoding="utf-8",
    )
    found = blocks(doc)
    assert [(b.line, b.language, b.skip_reason) for b in found] == [(4, "bash", "needs a GPU"), (8, "python", None)]
    assert markers(doc) == [3]


def test_shrinking_rewrites_sizes_only() -> None:
    assert shrink_args(["train", "--model", "m", "--data", "d", "--epochs", "8", "--image-size", "224"]) == [
        "train", "--model", "m", "--data", "d", "--epochs", "1", "--image-size", "32", "--max-images", "24",
    ]  # fmt: skip
    assert shrink_args(["synth", "p", "--n-studies", "5"]) == ["synth", "p", "--n-studies", "5"]
    assert shrink_args(["demo", "--out", "demo"]) == ["demo", "--out", "demo", "--quick"]
    assert shrink_args(["explain", "--input", "f.png"]) == ["explain", "--input", "f.png"]
    assert (
        shrink_python('api.train("m", root, epochs=3, image_size=128)')
        == 'api.train("m", root, epochs=1, image_size=64)'
    )


# ------------------------------------------------------------------------ --help options <-> docs/commands.md


def _commands() -> dict[str, dict[str, object]]:
    """Every command path ('audit', 'group sub') -> its long option names, from the click tree."""
    import click

    from xray_xai.cli import main

    out: dict[str, dict[str, object]] = {}

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            for name in command.list_commands(click.Context(command)):
                sub = command.get_command(click.Context(command), name)
                assert sub is not None
                walk(sub, [*path, name])
        else:
            names = {o for p in command.params for o in [*p.opts, *p.secondary_opts] if o.startswith("-")}
            out[" ".join(path)] = {"options": names}

    walk(main, [])
    return out


def _reference_sections() -> dict[str, str]:
    text = (REPO / "docs" / "commands.md").read_text(encoding="utf-8")
    parts = re.split(r"^## xray-xai (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def test_every_help_option_is_in_the_reference() -> None:
    sections = _reference_sections()
    for path, info in _commands().items():
        assert path in sections, f"docs/commands.md has no section `## xray-xai {path}`"
        missing = [
            o for o in sorted(info["options"]) if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", sections[path])
        ]  # type: ignore[attr-defined]
        assert missing == [], f"`xray-xai {path}` options missing from docs/commands.md: {missing}"


def _documented_invocations() -> list[tuple[str, str, list[str]]]:
    """(where, command, --options) of every `xray-xai COMMAND ...` written in the docs: code blocks (run or not) and
    inline code spans."""
    import shlex

    commands = _commands()
    found = []
    for doc in documents():
        text = doc.read_text(encoding="utf-8")
        name = doc.relative_to(REPO).as_posix()
        snippets = re.findall(r"```(?:bash)\n(.*?)```", text, re.S) + re.findall(r"(?<!`)`(xray-xai [^`\n]+)`", text)
        for snippet in snippets:
            for line in re.sub(r"\$\([^)]*\)", "X", re.sub(r"\\\n", " ", snippet)).splitlines():
                for match in re.finditer(r"xray-xai ([^|;&#]*)", line):
                    try:
                        words = shlex.split(match[1])
                    except ValueError:
                        words = match[1].split()
                    if not words or words[0] not in commands:
                        continue
                    options = [w.split("=", 1)[0] for w in words[1:] if w.startswith("-") and not w[1:2].isdigit()]
                    found.append((name, words[0], options))
    return found


def test_every_documented_option_exists() -> None:
    commands = _commands()
    wrong = [
        f"{where}: xray-xai {command} {option}"
        for where, command, options in _documented_invocations()
        for option in options
        if option not in commands[command]["options"]  # type: ignore[operator]
    ]
    assert wrong == [], "documented options that the command does not have:\n" + "\n".join(wrong)
    assert len(_documented_invocations()) > 40
