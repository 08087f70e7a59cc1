"""The package's shape: its public names, the documented exception tree, and its
independence from the server (own pyproject, httpx + pydantic only, never imports vlserve)."""

from __future__ import annotations

import ast
import inspect
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import vlserve_client
from vlserve_client import _exceptions

PKG = Path(vlserve_client.__file__).parent
PYPROJECT = PKG.parent / "pyproject.toml"


def test_all_is_the_public_surface():
    public = {n for n, v in vars(vlserve_client).items()
              if not n.startswith("_") and not inspect.ismodule(v)} | {"__version__"}
    assert sorted(vlserve_client.__all__) == vlserve_client.__all__ == sorted(public)
    for name in vlserve_client.__all__:
        obj = getattr(vlserve_client, name)
        if inspect.isclass(obj):
            assert obj.__module__ == "vlserve_client", name


def test_client_and_async_client_share_one_base_and_one_set_of_methods():
    from vlserve_client._base import BaseClient

    sync, aio = vlserve_client.Client, vlserve_client.AsyncClient
    assert BaseClient in sync.__mro__ and BaseClient in aio.__mro__
    methods = {n for n, v in vars(sync).items() if callable(v) and not n.startswith("_")} - {"close"}
    assert methods == {n for n, v in vars(aio).items() if callable(v) and not n.startswith("_")} - {"aclose"}
    assert {"caption", "embed", "score", "rank", "vqa", "capfilt", "models", "health", "ready",
            "caption_many", "embed_many", "wait_ready"} == methods
    for name in methods:
        assert inspect.iscoroutinefunction(getattr(aio, name)), name
        assert inspect.signature(getattr(sync, name)).parameters.keys() == \
            inspect.signature(getattr(aio, name)).parameters.keys(), name


def test_exception_tree_matches_its_documentation():
    """Each line `├── Name` of the module docstring names a class whose base is the name
    one indent level up."""
    parents: dict[int, str] = {}
    documented = {}
    for line in _exceptions.__doc__.splitlines():
        m = re.match(r"^([│ ├└─]*?)(\w+Error)\b", line)
        if not m:
            continue
        depth = len(m.group(1)) // 4
        parents[depth] = m.group(2)
        documented[m.group(2)] = parents.get(depth - 1)
    assert documented["VlserveError"] is None and documented["APITimeoutError"] == "APIConnectionError"
    for name, parent in documented.items():
        assert getattr(vlserve_client, name).__bases__[0].__name__ == (parent or "Exception"), name
    raised = {n for n, v in vars(_exceptions).items() if inspect.isclass(v) and issubclass(v, Exception)}
    assert raised == set(documented), "every exception class is in the documented tree"


def test_dependencies_are_httpx_and_pydantic_only():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    assert project["name"] == "vlserve-client"
    assert sorted(re.split(r"[<>=!~ ]", d)[0] for d in project["dependencies"]) == ["httpx", "pydantic"]
    assert project["version"] == vlserve_client.__version__


def test_never_imports_the_server():
    allowed = {"httpx", "pydantic", "typing_extensions", "tqdm", "vlserve_client", "__future__"}
    for path in PKG.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                root = name.split(".")[0]
                assert root in allowed or root in sys.stdlib_module_names, f"{path.name} imports {name}"
    code = "import sys, vlserve_client; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('vlserve', 'torch', 'PIL', 'fastapi', 'numpy')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_wheel_holds_the_client_alone(tmp_path):
    """`pip install ./clients/python` builds this wheel (built offline here, from a copy)."""
    source = shutil.copytree(PKG.parent, tmp_path / "src", ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source),
                    "-w", str(tmp_path)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("vlserve_client-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"vlserve_client", wheel.name.split("-py")[0] + ".dist-info"}
    assert "vlserve_client/py.typed" in names
    dist = wheel.name.split("-py")[0] + ".dist-info/"
    meta = zipfile.ZipFile(wheel).read(dist + "METADATA").decode()
    requires = [ln.split(":", 1)[1].strip() for ln in meta.splitlines() if ln.startswith("Requires-Dist:")]
    assert sorted(r for r in requires if ";" not in r) == ["httpx>=0.27", "pydantic>=2.6"]  # the rest: extras
    scripts = zipfile.ZipFile(wheel).read(dist + "entry_points.txt").decode()
    assert "vlserve-client = vlserve_client._cli:main" in scripts
