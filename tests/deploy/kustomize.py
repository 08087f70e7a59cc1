"""A renderer for the Kustomize subset deploy/k8s uses (resources, JSON 6902 patches, images,
namespace), and the manifests' YAML loading."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from tests.deploy.conftest import ROOT

K8S = ROOT / "deploy/k8s"
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding"}


class Unsupported(Exception):
    pass


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def json_patch(doc: dict, ops: list[dict]) -> None:
    """RFC 6902 add / remove / replace, failing as kustomize does when a path is missing."""
    for op in ops:
        *parents, key = _pointer(op["path"])
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        kind = op["op"]
        if kind not in ("add", "remove", "replace"):
            raise Unsupported(f"JSON patch op {kind!r}: the test's renderer knows add, remove, replace")
        if isinstance(node, list):
            index = len(node) if key == "-" else int(key)
            if kind == "add":
                node.insert(index, copy.deepcopy(op["value"]))
            elif kind == "remove":
                node.pop(index)
            else:
                node[index] = copy.deepcopy(op["value"])
        else:
            if kind != "add" and key not in node:
                raise KeyError(f"{kind} {op['path']}: no such field")
            if kind == "remove":
                del node[key]
            else:
                node[key] = copy.deepcopy(op["value"])


def _set_image(pod_spec: dict, images: list[dict]) -> None:
    for c in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
        name, _, tag = c["image"].rpartition(":") if ":" in c["image"].split("/")[-1] else (c["image"], "", "")
        for rule in images:
            if rule["name"] == name:
                c["image"] = f"{rule.get('newName', name)}:{rule.get('newTag', tag)}".rstrip(":")


def render(folder: Path) -> list[dict]:
    """resources (files, or folders holding a kustomization), then patches, images, namespace."""
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    extra = set(k) - {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
    if extra:
        raise Unsupported(f"{folder}: {sorted(extra)}: extend render() in {__file__} or keep to its subset")
    docs: list[dict] = []
    for entry in k.get("resources", []):
        path = folder / entry
        if path.is_dir():
            docs += render(path)
        else:
            assert path.is_file(), f"{folder / 'kustomization.yaml'} lists missing {entry}"
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for p in k.get("patches", []):
        ops = yaml.safe_load((folder / p["path"]).read_text() if "path" in p else p["patch"])
        if not isinstance(ops, list):
            raise Unsupported(f"{folder}: only JSON 6902 patches (a list of ops) are rendered here")
        target = p["target"]
        hits = [d for d in docs if d["kind"] == target["kind"]
                and target.get("name", d["metadata"]["name"]) == d["metadata"]["name"]]
        assert hits, f"{folder}: patch {p.get('path', '(inline)')} targets nothing: {target}"
        for d in hits:
            json_patch(d, ops)
    for d in docs:
        if d["kind"] == "Deployment" and k.get("images"):
            _set_image(d["spec"]["template"]["spec"], k["images"])
        if "namespace" in k and d["kind"] not in CLUSTER_SCOPED:
            d["metadata"]["namespace"] = k["namespace"]
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def load_all(relative: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / relative).read_text()) if d]

