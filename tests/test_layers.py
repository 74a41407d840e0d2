# Copyright © 2026 mlx-kyutai-is contributors
"""The layout's rules, checked: the import-linter layer contract (pyproject.toml), imports at the
top of modules, a short flat top level, and tests that never import a command or a tool."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "mlx_kyutai_is"
# Optional heavy dependencies may be imported where used (torch/transformers for the reference,
# sounddevice for the microphone, sentencepiece for old tokenizers, moshi_mlx for the benchmark).
MAX_FUNCTION_IMPORTS = 20
MAX_TOP_LEVEL_MODULES = 12


def _function_level_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    return [
        f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top
    ]


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_layer_contract_is_kept(tmp_path):
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    p = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 broken" in p.stdout and " kept" in p.stdout, p.stdout


def test_imports_are_at_the_top_of_modules():
    found = [line for path in sorted(PACKAGE.rglob("*.py")) for line in _function_level_imports(path)]
    assert len(found) <= MAX_FUNCTION_IMPORTS, "\n".join(found)
    allowed = ("torch", "transformers", "sounddevice", "sentencepiece", "moshi_mlx", "zeroconf", "ray")
    for line in found:
        assert any(f"import {m}" in line for m in allowed), line


def test_top_level_stays_small():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules


def test_tests_never_import_commands_or_tools():
    for path in sorted(Path(__file__).parent.glob("*.py")):
        bad = [m for m in _imported_modules(path) if m.startswith(("mlx_kyutai_is.cli", "mlx_kyutai_is.tools"))]
        assert not bad, f"{path.name} imports {bad}: run commands as subprocesses instead"
