"""The shape of the code: one folder per concern, data flowing one way, small modules.

Sinks render the snapshot through the catalog and never reach a loader or the host; a
concern's metrics read only the model; each concern has the same parts."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "exporter"
BPF = PACKAGE.parent / "bpf"
CONCERNS = ("connections", "flows", "http", "dns", "drops")
MAX_LINES = 300


def imports(path: Path) -> set[str]:
    """The modules a file imports (`from a.b import c` counts as a.b and a.b.c)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def ours(modules: set[str]) -> set[str]:
    return {m for m in modules if m == "exporter" or m.startswith("exporter.")}


def allowed(module: str, prefixes: tuple[str, ...]) -> bool:
    return module in ("exporter", "exporter.__version__") or module.startswith(prefixes)


def test_sinks_depend_on_the_model_and_the_catalog_never_on_a_loader_or_the_host() -> None:
    prefixes = ("exporter.model", "exporter.catalog", "exporter.config", "exporter.errors",
                "exporter.collector.periodic", "exporter.sinks")
    for path in sorted((PACKAGE / "sinks").rglob("*.py")):
        modules = imports(path)
        assert not {m for m in modules if m.split(".")[0] in ("bcc", "pyroute2")}, path
        bad = {m for m in ours(modules) if not allowed(m, prefixes)}
        assert not bad, (path, bad)


def test_metric_definitions_read_only_the_model() -> None:
    for path in [PACKAGE / c / "metrics.py" for c in CONCERNS] + [
            PACKAGE / "collector" / "metrics.py"]:
        bad = {m for m in ours(imports(path)) if not allowed(m, ("exporter.model",))}
        assert not bad, (path, bad)
    catalog = ours(imports(PACKAGE / "catalog.py"))
    packages = {f"exporter.{name}" for name in (*CONCERNS, "collector")}
    assert all(m.startswith("exporter.model") or m.endswith(".metrics") or m in packages
               for m in catalog), catalog


def test_every_concern_has_the_same_parts() -> None:
    for concern in CONCERNS:
        parts = {p.name for p in (PACKAGE / concern).glob("*.py")}
        assert {"loader.py", "metrics.py", "tool.py"} <= parts, concern
        assert (BPF / f"{concern}.c").is_file(), concern
        assert (BPF / "include" / f"{concern}.h").is_file(), concern
    assert sorted(p.stem for p in BPF.glob("*.c")) == sorted(CONCERNS)


def test_no_module_is_long() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long
