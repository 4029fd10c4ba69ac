"""Every command in README.md and docs/*.md that runs offline is run, so the docs cannot rot.

The convention (shared by everyone writing docs): a fenced block tagged ``bash`` is executed,
offline, from the repository root, with the package installed and no AWS (moto not running); a
block tagged ``shell`` is shown only (real AWS, placeholders like ``<BUCKET>``, minutes of work).
Any other block that holds commands fails this test, so nothing is left untagged by mistake.

How a ``bash`` block runs: as one ``bash -e`` script (so ``cd`` and variables carry from line to
line) in a scratch copy of the repository's files (a command that writes, e.g. ``sample
./my-sample``, writes there, not into the clone), with ``python`` being the interpreter running the
tests.  A command expected to fail says so in a trailing comment, ``# exit status N``, and must
exit with exactly N.

The README's two install commands create a virtualenv and install into it: ``.ci/run`` runs them
on a fresh clone (and the test command must stay identical to the one there, checked below).
Here their ``python3 -m venv .venv && . .venv/bin/activate && pip install ...`` prefix is
dropped and what follows is run with the installed package, except ``pytest`` itself (this test
is part of that run).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)\s*$")
INSTALL = re.compile(r"^python3 -m venv \.venv && \. \.venv/bin/activate && (PIP_CONSTRAINT=\S+ )?pip install [^&]+&& ")
EXPECTED_EXIT = re.compile(r"\s+#[^#]*\bexit status (\d+)\s*$")
# Lines that are commands, for spotting a block of commands that is not tagged bash or shell.
COMMAND = re.compile(r"^\s*(\$ )?(python3?|pip|pytest|aws|cdk|cd|git|curl|npm|npx|bash|sh|\.ci/|bubbly-metrics)\b")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    tag: str
    text: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        start = i
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        found.append(Block(path, start + 1, opening.group(1), "\n".join(body)))
        i += 1
    return found


ALL = [b for path in DOCS for b in blocks(path)]
BASH = [b for b in ALL if b.tag == "bash"]


def commands(text: str) -> list[str]:
    """The block's commands, backslash continuations joined."""
    joined: list[str] = []
    pending = ""
    for line in text.splitlines():
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        joined.append(pending)
        pending = ""
    if pending:
        joined.append(pending)
    return joined


def script(block: Block) -> str | None:
    """The block as a bash script (None: nothing left to run here)."""
    out = ["set -eo pipefail"]
    for command in commands(block.text):
        stripped = command.strip()
        if not stripped or stripped.startswith("#"):
            continue
        install = INSTALL.match(stripped)
        if install:
            stripped = stripped[install.end() :]
            if stripped.split()[0] == "pytest":
                continue  # the test run this test is part of
        expected = EXPECTED_EXIT.search(stripped)
        if expected:
            code = int(expected.group(1))
            stripped = stripped[: expected.start()]  # the comment would swallow what follows
            out.append(
                f"rc=0; {stripped} || rc=$?\n"
                f'[ "$rc" -eq {code} ] || {{ echo "exit status $rc, the docs say {code}: {stripped}" >&2; exit 1; }}'
            )
        else:
            out.append(stripped)
    return "\n".join(out) if len(out) > 1 else None


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's files (tracked and new, not ignored) in a scratch folder."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    copy = tmp_path_factory.mktemp("repo")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


def test_the_docs_have_blocks_to_run():
    assert {b.path.name for b in BASH} >= {"README.md", "architecture.md"}


@pytest.mark.parametrize("block", BASH, ids=[b.name for b in BASH])
def test_bash_block_runs_offline(block: Block, scratch: Path) -> None:
    code = script(block)
    if code is None:
        pytest.skip(f"{block.name}: only the install and test commands .ci/run runs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        AWS_EC2_METADATA_DISABLED="true",
        MPLBACKEND="Agg",
    )
    proc = subprocess.run(
        ["bash", "-c", code], cwd=scratch, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, (
        f"{block.name}: the ```bash block failed (exit {proc.returncode}); tag it ```shell if it cannot run "
        f"offline\n--- block ---\n{block.text}\n--- stderr ---\n{proc.stderr[-3000:]}"
    )


def test_every_other_block_of_commands_is_tagged_shell():
    untagged = [
        b.name
        for b in ALL
        if b.tag not in ("bash", "shell") and any(COMMAND.match(line) for line in b.text.splitlines())
    ]
    assert untagged == [], (
        f"blocks of commands must be ```bash (run offline by tests/test_docs.py) or ```shell (shown only): {untagged}"
    )


def test_the_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    (test_command,) = [b.text for b in ALL if b.path.name == "README.md" and b.text.rstrip().endswith("&& pytest")]
    assert test_command.strip() in ci.splitlines(), "README's test command differs from .ci/run's"
    assert "python -m bubbly_metrics aggregate" in readme and "python -m bubbly_metrics aggregate" in ci


@pytest.mark.parametrize(("line", "ok"), [("false  # exit status 1", True), ("true  # exit status 1", False)])
def test_an_expected_exit_status_is_checked(line: str, ok: bool) -> None:
    code = script(Block(ROOT / "README.md", 1, "bash", f"echo a \\\n  b\n{line}\n"))
    assert code is not None and "echo a    b" in code
    assert (subprocess.run(["bash", "-c", code], capture_output=True, check=False).returncode == 0) is ok


def test_the_readme_library_example_runs_offline() -> None:
    """The README's first ```python block is the library's first contact: it must run as shown."""
    (first, *_rest) = [b for b in ALL if b.path.name == "README.md" and b.tag == "python"]
    assert "sample_export_location()" in first.text and "s3://" not in first.text
    namespace: dict[str, object] = {}
    exec(compile(first.text, first.name, "exec"), namespace)  # noqa: S102 - the README's own example
    assert namespace["result"].metrics.height > 0  # type: ignore[attr-defined]


# --- docs/rules.md: the rules the code implements, and every reference to them ------------------

RULES = ROOT / "docs" / "rules.md"
RULES_HEADINGS = (
    "Records",
    "Export layouts",
    "Finding exports",
    "Metrics",
    "Modes and date ranges",
    "Analytics Table",
    "CloudWatch",
    "Lambda entrypoints",
    "CLI",
    "Notebooks",
    "Deploy",
    "Faults and hostile input",
)
"""The sections of docs/rules.md, in order (code and docs link to their anchors)."""
TRACKED_ROOTS = ("bubbly_metrics/", "deploy/", "tests/", "bench/", "scripts/", "docs/", "notebooks/", "README.md")
RULES_LINK = re.compile(r"(?<![\w.-])(?:docs/)?rules\.md#([\w-]+)")
SPEC_CITATION = re.compile("SPEC" + r"[\s#]*" + "\u00a7")  # spelt apart, so this file does not cite it
"""A citation of the spec, also one broken over two lines of a comment or docstring."""


def tracked_texts() -> list[tuple[str, str]]:
    """``(path, text)`` of every tracked text file under :data:`TRACKED_ROOTS`."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--", *TRACKED_ROOTS], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    texts = []
    for name in filter(None, (n.decode() for n in names)):
        path = ROOT / name
        if not path.is_file():
            continue
        try:
            texts.append((name, path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            continue  # binary (sample exports, the compiled decoder)
    return texts


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of ``markdown`` (lower case, punctuation dropped,
    spaces to hyphens, ``-1``, ``-2`` … for repeats); headings inside code blocks do not count."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not heading:
            continue
        text = re.sub(r"`([^`]*)`", r"\1", heading.group(1))
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_github_anchors_follow_githubs_rules():
    text = (
        "# A `code` Title, (2)\n## Faults and hostile input\n```\n# not a heading\n```\n## Faults and hostile input\n"
    )
    assert github_anchors(text) == {"a-code-title-2", "faults-and-hostile-input", "faults-and-hostile-input-1"}


def test_rules_has_the_sections_code_points_to():
    headings = [m.group(1) for m in re.finditer(r"^## (.+)$", RULES.read_text(), re.MULTILINE)]
    assert tuple(headings[: len(RULES_HEADINGS)]) == RULES_HEADINGS


def test_no_tracked_file_cites_a_document_the_repository_does_not_have():
    """Comments and docs point at docs/rules.md (and docs/operations.md), never at the spec."""
    citing = [
        f"{name}:{text.count(chr(10), 0, match.start()) + 1}"
        for name, text in tracked_texts()
        for match in SPEC_CITATION.finditer(text)
    ]
    assert citing == [], f"cite docs/rules.md#<section> instead: {citing}"


def test_every_rules_link_names_a_section_of_rules_md():
    anchors = github_anchors(RULES.read_text())
    broken = [
        f"{name}: rules.md#{anchor}"
        for name, text in tracked_texts()
        for anchor in RULES_LINK.findall(text)
        if anchor not in anchors
    ]
    assert broken == [], f"no such heading in docs/rules.md (its anchors: {sorted(anchors)}): {broken}"
