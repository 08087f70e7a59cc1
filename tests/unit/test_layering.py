"""DESIGN.md §3: imports only go down api -> tasks -> scheduling -> engine -> models -> kernels."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "server" / "vlserve"
ORDER = ["api", "repository", "tasks", "scheduling", "engine", "models"]  # repository wires models for api


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
