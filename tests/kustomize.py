"""A small kustomize renderer for the features deploy/ uses, so tests need no kubectl.

Supported: resources (files and kustomization directories), namespace, labels (with
includeSelectors), configMapGenerator (envs, files, literals, behavior: merge) with kustomize's
content-hash name suffix and reference rewriting, images (newName/newTag), and
strategic-merge patches matched by kind and name (lists of named items merge by name).
Anything else in a kustomization fails loudly rather than rendering something different.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

_KNOWN = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "configMapGenerator",
    "images",
    "patches",
}


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        out = [copy.deepcopy(i) for i in base]
        for item in patch:
            match = next((k for k, b in enumerate(out) if b["name"] == item["name"]), None)
            if match is None:
                out.append(copy.deepcopy(item))
            else:
                out[match] = _merge(out[match], item)
        return out
    return copy.deepcopy(patch)


def _env_file(path: Path) -> dict[str, str]:
    data = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            data[key] = value
    return data


def _generators(root: Path, spec: list[dict], previous: dict[str, dict]) -> dict[str, dict]:
    out = dict(previous)
    for gen in spec:
        data: dict[str, str] = {}
        for env in gen.get("envs", []):
            data.update(_env_file(root / env))
        for literal in gen.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        for file in gen.get("files", []):
            data[Path(file).name] = (root / file).read_text()
        behavior = gen.get("behavior", "create")
        if behavior == "merge":
            out[gen["name"]] = {**out[gen["name"]], **data}
        elif behavior == "create":
            if gen["name"] in out:
                raise ValueError(f"configMapGenerator {gen['name']} already exists")
            out[gen["name"]] = data
        else:
            raise ValueError(f"unsupported behavior {behavior}")
    return out


def _load(root: Path) -> tuple[list[dict], dict[str, dict], dict]:
    k = yaml.safe_load((root / "kustomization.yaml").read_text())
    unknown = set(k) - _KNOWN
    if unknown:
        raise ValueError(f"{root}: unsupported kustomization fields {sorted(unknown)}")
    objects: list[dict] = []
    configmaps: dict[str, dict] = {}
    images: dict = {}
    for res in k.get("resources", []):
        path = root / res
        if path.is_dir():
            sub_objects, sub_maps, sub_images = _load(path)
            objects += sub_objects
            configmaps.update(sub_maps)
            images.update(sub_images)
        else:
            objects += [o for o in yaml.safe_load_all(path.read_text()) if o]
    configmaps = _generators(root, k.get("configMapGenerator", []), configmaps)
    for patch in k.get("patches", []):
        doc = yaml.safe_load((root / patch["path"]).read_text())
        targets = [
            i
            for i, o in enumerate(objects)
            if o["kind"] == doc["kind"] and o["metadata"]["name"] == doc["metadata"]["name"]
        ]
        if len(targets) != 1:
            raise ValueError(f"patch {patch['path']} matches {len(targets)} objects")
        objects[targets[0]] = _merge(objects[targets[0]], doc)
    for label in k.get("labels", []):
        for o in objects:
            o.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
            if label.get("includeSelectors"):
                _add_selector_labels(o, label["pairs"])
    for image in k.get("images", []):
        images[image["name"]] = image
    if "namespace" in k:
        for o in objects:
            o["metadata"]["namespace"] = k["namespace"]
        for name in configmaps:
            configmaps[name] = {**configmaps[name], "__namespace__": k["namespace"]}
    return objects, configmaps, images


def _add_selector_labels(o: dict, pairs: dict) -> None:
    spec = o.get("spec", {})
    if o["kind"] in ("Deployment", "Job"):
        if o["kind"] == "Deployment":
            spec.setdefault("selector", {}).setdefault("matchLabels", {}).update(pairs)
        spec["template"].setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    elif o["kind"] == "Service":
        spec.setdefault("selector", {}).update(pairs)
    elif o["kind"] == "PodDisruptionBudget":
        spec.setdefault("selector", {}).setdefault("matchLabels", {}).update(pairs)


def _hash(data: dict) -> str:
    """A content-hash name suffix as kustomize adds one (same purpose, not its exact encoding):
    a changed ConfigMap gets a new name, so pods roll."""
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    table = str.maketrans("0123456789abcdef", "ghkmnptbcdfg2t4h")  # no vowels: no accidental words
    return digest[:10].translate(table)


def render(overlay: Path) -> list[dict]:
    objects, configmaps, images = _load(Path(overlay))
    names = {}
    for name, data in configmaps.items():
        namespace = data.pop("__namespace__", None)
        generated = f"{name}-{_hash(data)}"
        names[name] = generated
        meta: dict = {"name": generated}
        if namespace:
            meta["namespace"] = namespace
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    for o in objects:
        pod = o.get("spec", {}).get("template", {}).get("spec")
        if not pod:
            continue
        for c in pod.get("containers", []):
            image = images.get(c["image"])
            if image:
                c["image"] = f"{image.get('newName', c['image'])}:{image.get('newTag', 'latest')}"
            for source in c.get("envFrom", []):
                ref = source.get("configMapRef")
                if ref and ref["name"] in names:
                    ref["name"] = names[ref["name"]]
        for volume in pod.get("volumes", []):
            ref = volume.get("configMap")
            if ref and ref["name"] in names:
                ref["name"] = names[ref["name"]]
    return objects


def settings_from(env: dict[str, str]):
    """The gateway's settings as a manifest's environment makes them (os.environ restored)."""
    import os

    from service.settings import GatewaySettings

    saved = dict(os.environ)
    try:
        os.environ.update(env)
        return GatewaySettings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
