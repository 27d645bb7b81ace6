"""Render a kustomization the way `kubectl apply -k` would, for the features deploy/kubernetes uses
(no kustomize binary here): resources (files and folders), namespace, images, JSON 6902 patches
with a kind/name target. Any other field is refused, so that a new one is not silently ignored."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

_KNOWN = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
_CLUSTER_SCOPED = {"Namespace"}


def render(folder: Path) -> list[dict]:
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(spec) - _KNOWN
    if unknown:
        raise ValueError(f"{folder}/kustomization.yaml: fields this renderer does not implement: {sorted(unknown)}")
    objects: list[dict] = []
    for entry in spec.get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            objects += render(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in spec.get("patches", []):
        ops = yaml.safe_load((folder / patch["path"]).read_text())
        targets = [o for o in objects if o["kind"] == patch["target"]["kind"]
                   and o["metadata"]["name"] == patch["target"]["name"]]
        if len(targets) != 1:
            raise ValueError(f"patch {patch['path']} matches {len(targets)} objects")
        apply_json_patch(targets[0], ops)
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in _CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = spec["namespace"]
    for image in spec.get("images", []):
        for container in containers(objects):
            name, _, _tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', _tag or 'latest')}"
    return objects


def containers(objects: list[dict]) -> list[dict]:
    """Every container and init container of the workloads (Deployment, Job), in place."""
    out = []
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec")
        if pod:
            out += pod.get("initContainers", []) + pod.get("containers", [])
    return out


def _walk(doc, pointer: str):
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    parent = doc
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    return parent, parts[-1]


def apply_json_patch(doc: dict, ops: list[dict]) -> None:
    """RFC 6902 add, remove and replace (what the overlays use); a missing path raises."""
    for op in ops:
        parent, key = _walk(doc, op["path"])
        if isinstance(parent, list):
            index = len(parent) if key == "-" else int(key)
            if op["op"] == "add":
                parent.insert(index, copy.deepcopy(op["value"]))
                continue
            parent[index]  # raises IndexError on a stale index
        elif op["op"] in ("remove", "replace") and key not in parent:
            raise KeyError(f"patch path {op['path']} does not exist")
        if op["op"] == "remove":
            del parent[int(key) if isinstance(parent, list) else key]
        elif op["op"] in ("replace", "add"):
            parent[int(key) if isinstance(parent, list) else key] = copy.deepcopy(op["value"])
        else:
            raise ValueError(f"unsupported patch op {op['op']}")
