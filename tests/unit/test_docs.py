"""The documentation keeps up with the code: the settings table, the README's length, the links
(README.md, CONTRIBUTING.md and docs/*.md).

Everything is read at test time (env.py, src/, the Markdown files), so a variable or a page added later is
checked without touching this file.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "dogbreed"
SETTINGS = ROOT / "docs" / "settings.md"
README = ROOT / "README.md"
README_MAX_LINES = 200

VARIABLE_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
DOGBREED_LITERAL = re.compile(r"[\"'](DOGBREED_[A-Z0-9_]+)[\"']")
# [text](target): the target up to the first space or closing parenthesis; images too
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")


def env_variable_names(path: Path) -> list[str]:
    """The variable names env.py defines: module-level UPPERCASE constants whose value is itself a variable name
    (``SM_MODEL_DIR = "SM_MODEL_DIR"``, the prefix ``SM_CHANNEL_``), not paths such as ``DEFAULT_BASE_DIR``."""
    names = []
    for node in ast.parse(path.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        value = getattr(node, "value", None)
        if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id.isupper() and VARIABLE_NAME.match(value.value):
                names.append(value.value)
    return names


def dogbreed_literals(root: Path) -> set[str]:
    """Every ``"DOGBREED_..."`` string in the package, wherever a module keeps its own name."""
    found: set[str] = set()
    for path in root.rglob("*.py"):
        found.update(DOGBREED_LITERAL.findall(path.read_text()))
    return found


def documented(name: str, text: str) -> bool:
    """The name as a whole word in the page (``SM_HOSTS`` is not documented by ``SM_HOSTS_X``)."""
    return re.search(rf"(?<![A-Z0-9_]){re.escape(name)}(?![A-Z0-9_])", text) is not None


def markdown_pages() -> list[Path]:
    return [README, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def outside_fences(text: str) -> list[str]:
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in outside_fences(path.read_text()) if line.startswith("#")}


def relative_links(path: Path) -> list[str]:
    targets = []
    for line in outside_fences(path.read_text()):
        line = re.sub(r"`[^`]*`", "", line)  # code spans are not links
        targets += [t for t in LINK.findall(line) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]
    return targets


def test_env_py_defines_variable_names():
    # the parser under the other tests: if it found nothing, every settings test would pass vacuously
    names = env_variable_names(SRC / "env.py")
    assert "SM_MODEL_DIR" in names and "DOGBREED_SERVER" in names
    assert "/opt/ml" not in names


@pytest.mark.parametrize("name", env_variable_names(SRC / "env.py"))
def test_every_env_py_name_is_in_the_settings_table(name):
    assert documented(name, SETTINGS.read_text()), f"{name} (src/dogbreed/env.py) is missing from docs/settings.md"


def test_every_dogbreed_variable_in_the_package_is_in_the_settings_table():
    text = SETTINGS.read_text()
    missing = sorted(name for name in dogbreed_literals(SRC) if not documented(name, text))
    assert not missing, f"missing from docs/settings.md: {', '.join(missing)}"


def test_documented_rejects_a_longer_name():
    assert documented("SM_HOSTS", "| `SM_HOSTS` |")
    assert not documented("SM_HOSTS", "| `SM_HOSTS_EXTRA` | `XSM_HOSTS` |")
    assert documented("SM_CHANNEL_", "`SM_CHANNEL_<NAME>`")


def test_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines < README_MAX_LINES, f"README.md has {lines} lines; keep it under {README_MAX_LINES}, details in docs/"


def test_readme_keeps_the_ci_test_command():
    # .ci/run runs "the README's test command": the two must stay the same
    command = re.compile(r"^make test(\s|$)", re.MULTILINE)
    assert command.search((ROOT / ".ci" / "run").read_text())
    assert command.search(README.read_text())


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_existing_files(page):
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        goal = (page.parent / file_part).resolve() if file_part else page
        if not goal.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and goal.suffix == ".md" and anchor not in anchors(goal):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {', '.join(broken)}"


def test_link_checker_sees_links_and_headings(tmp_path):
    page = tmp_path / "a.md"
    page.write_text("# Two HTTP fronts: `mms` or native\n[x](b.md#top) `[y](c.md)` [z](https://e.com)\n"
                    "```\n[w](d.md)\n```\n")
    assert relative_links(page) == ["b.md#top"]
    assert anchors(page) == {"two-http-fronts-mms-or-native"}


def test_the_readme_gpu_ami_table_is_the_code_s():
    """Each family the code knows is in one row of the README's AMI table, with the AMIs the code sends (or says
    it refuses, or that AWS offers no Batch Transform on it)."""
    from dogbreed.launch.instances import GPU_FAMILIES

    rows = [line for line in README.read_text().splitlines() if line.startswith("| ml.")]
    for name, family in GPU_FAMILIES.items():
        row = next((r for r in rows if re.search(rf"(ml\.|, ){name}(,| \|)", r)), None)
        assert row is not None, f"{name} is in no row of the README's AMI table"
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1] == (family.inference_ami or "refused (no kernels below sm_75)"), (name, row)
        want = family.transform_ami or ("refused" if family.unsupported else "no Batch Transform on them")
        assert cells[2] == want, (name, row)
