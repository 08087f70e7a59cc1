"""DESIGN.md §3: imports only go down api -> tasks -> scheduling -> engine -> models -> kernels."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "server" / "vlserve"
ORDER = ["api", "repository", "tasks", "scheduling", "families", "engine", "models"]  # repository wires models for api


def imports_of(path: Path) -> set[str]:
    """vlserve sub-packages (and third-party roots) a module imports, resolving relative imports."""
    tree = ast.parse(path.read_text())
    parts = path.relative_to(PKG.parent).with_suffix("").parts  # ('vlserve', 'api', 'routes')
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level]
                found.add(".".join(base + ((node.module,) if node.module else ())))
            elif node.module:
                found.add(node.module)
    return found


def layer_of(module: str) -> str | None:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 and bits[0] == "vlserve" and bits[1] in ORDER else None


@pytest.mark.parametrize("layer", ORDER)
def test_imports_only_go_down(layer):
    allowed = set(ORDER[ORDER.index(layer):])
    for path in (PKG / layer).rglob("*.py"):
        for module in imports_of(path):
            target = layer_of(module)
            assert target is None or target in allowed, f"{path.relative_to(PKG)} imports {module}"


def test_api_does_not_import_torch():
    for path in (PKG / "api").rglob("*.py"):
        assert not any(m == "torch" or m.startswith("torch.") for m in imports_of(path)), path


def test_models_do_no_io():
    for path in (PKG / "models").rglob("*.py"):
        mods = imports_of(path)
        assert not mods & {"safetensors", "json", "pathlib", "os", "requests", "httpx", "tokenizers"}, path


TOP = [PKG / "pipeline.py", PKG / "cli.py", PKG / "server.py"]  # they may use any layer, no family


def _families_named(path: Path) -> set[str]:
    """Families a module imports statically, or names as a module path in a string."""
    found = {m.split(".")[2] for m in imports_of(path) if m.startswith("vlserve.families.") and m.count(".") >= 2}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "vlserve.families." in node.value:
            found.add(node.value.split("vlserve.families.")[1].split(".")[0].split(":")[0])
    return found


def test_only_the_registry_names_a_family():
    """DESIGN §6: everything outside families/<name>/ sees a family through engine/family.py;
    the registry alone maps a family's name to its module."""
    registry = PKG / "repository" / "registry.py"
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        if path == registry or rel.parts[0] == "families":
            continue
        assert not _families_named(path), f"{rel} names a family: {_families_named(path)}"
    assert _families_named(registry) == {"blip", "coca", "beit3"}


def test_a_family_imports_no_other_family_and_nothing_above_the_engine():
    allowed = {"families", "engine", "models"}  # which family: _families_named below
    for family in (PKG / "families").iterdir():
        if not family.is_dir() or family.name.startswith("__"):
            continue
        for path in family.rglob("*.py"):
            for module in imports_of(path):
                target = layer_of(module)
                assert target is None or target in allowed, f"{path.relative_to(PKG)} imports {module}"
            assert _families_named(path) <= {family.name}, path


@pytest.mark.parametrize("path", TOP, ids=lambda p: p.name)
def test_top_level_modules_see_families_only_through_the_registry(path):
    assert not _families_named(path), path
