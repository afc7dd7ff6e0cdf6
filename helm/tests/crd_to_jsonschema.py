#!/usr/bin/env python3
"""Regenerate helm/tests/crd-schemas/ from upstream CustomResourceDefinition YAML.

    GW_PY=${XDG_CACHE_HOME:-$HOME/.cache}/gw-helm-venv/bin/python   # has PyYAML
    $GW_PY helm/tests/crd_to_jsonschema.py --kind NodePool \
        --source aws/karpenter-provider-aws@<commit>:pkg/apis/crds/karpenter.sh_nodepools.yaml \
        karpenter.sh_nodepools.yaml

Every served version of every selected CRD kind in the input files becomes
crd-schemas/<group>_<version>_<kind lowercased>.json, and its entry in
crd-schemas/index.json (apiVersion, kind, scope, file, provenance) is added
or replaced; other entries are kept. k8s_validate.py reads that index.

The CRD's openAPIV3Schema (OpenAPI 3.0 with Kubernetes extensions) is turned
into a JSON Schema (draft 2020-12) that is as strict as the API server's
strict field validation, minus what JSON Schema cannot say:
  * an object schema (in the structural part of the schema, not inside
    allOf/anyOf/oneOf/not) gets additionalProperties: false unless it has
    x-kubernetes-preserve-unknown-fields or its own additionalProperties,
    because the API server rejects (strict) or prunes unknown fields there;
  * x-kubernetes-int-or-string becomes anyOf integer/string; nullable adds
    "null" to the type; OpenAPI's boolean exclusiveMinimum/Maximum become
    the numeric 2020-12 form;
  * a field with a default is no longer required (the server defaults it
    before validating);
  * CEL rules (x-kubernetes-validations) cannot be evaluated here; they are
    dropped and counted in index.json (celRulesNotChecked);
  * descriptions, examples and format hints are dropped (size only: JSON
    Schema treats format as an annotation anyway).
The root pins apiVersion and kind; metadata is left open here because
k8s_validate.py checks it against the core ObjectMeta schema.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "crd-schemas")

# Annotations and Kubernetes extensions with no JSON Schema meaning (the ones
# that do have one are translated in to_json_schema before being dropped).
IGNORED = {
    "description", "example", "externalDocs", "format", "default", "nullable",
    "x-kubernetes-validations", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string", "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type",
}


def count_cel_rules(node) -> int:
    if isinstance(node, dict):
        own = len(node.get("x-kubernetes-validations") or [])
        return own + sum(count_cel_rules(v) for v in node.values())
    if isinstance(node, list):
        return sum(count_cel_rules(v) for v in node)
    return 0


def to_json_schema(node, structural: bool = True):
    """Translate one schema node; `structural` is False inside allOf/anyOf/oneOf/not,
    where a node only adds constraints and must not close the object."""
    if not isinstance(node, dict):
        return node
    out: dict = {}
    for key, value in node.items():
        if key in IGNORED:
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(sub, structural) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_json_schema(value, structural)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(sub, False) for sub in value]
        elif key == "not":
            out[key] = to_json_schema(value, False)
        else:
            out[key] = value

    for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(flag) is True and bound in out:
            out[flag] = out.pop(bound)
        elif isinstance(out.get(flag), bool):
            del out[flag]

    props = node.get("properties") or {}
    if "required" in out:
        still = [name for name in out["required"] if "default" not in (props.get(name) or {})]
        if still:
            out["required"] = still
        else:
            del out["required"]

    nullable = node.get("nullable") is True
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        either = [{"type": "integer"}, {"type": "string"}] + ([{"type": "null"}] if nullable else [])
        own = out.pop("anyOf", None)
        if own and own != either:  # keep a different anyOf of the CRD as its own constraint
            out.setdefault("allOf", []).append({"anyOf": own})
        out["anyOf"] = either
    elif nullable and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]

    is_object = node.get("type") == "object" or "properties" in node
    if (structural and is_object and "additionalProperties" not in out
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def convert_crd(crd: dict, kinds: set[str]):
    spec = crd.get("spec") or {}
    group, kind = spec["group"], spec["names"]["kind"]
    if kinds and kind not in kinds:
        return
    for version in spec.get("versions") or []:
        if not version.get("served"):
            continue  # the API server refuses an unserved version: no schema
        raw = ((version.get("schema") or {}).get("openAPIV3Schema")) or {"type": "object"}
        schema = to_json_schema(raw)
        api_version = f"{group}/{version['name']}"
        schema.setdefault("properties", {}).update({
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": {"type": "object"},
        })
        schema["type"] = "object"
        schema["additionalProperties"] = False
        schema["required"] = list(dict.fromkeys(["apiVersion", "kind", "metadata",
                                                 *schema.get("required", [])]))
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        yield {
            "apiVersion": api_version,
            "kind": kind,
            "scope": spec.get("scope", "Namespaced"),
            "file": f"{group}_{version['name']}_{kind.lower()}.json",
            "celRulesNotChecked": count_cel_rules(raw),
        }, schema


def parse_source(text: str) -> dict:
    # owner/name@commit:path
    repo_commit, sep, path = text.partition(":")
    repo, at, commit = repo_commit.partition("@")
    if not (sep and at and repo and commit and path):
        raise argparse.ArgumentTypeError(f"--source wants OWNER/NAME@COMMIT:PATH, got {text!r}")
    return {"repository": repo, "commit": commit, "path": path}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="schema folder (default: %(default)s)")
    ap.add_argument("--kind", action="append", default=[], help="keep only this kind (repeatable)")
    ap.add_argument("--source", action="append", default=[], type=parse_source,
                    help="OWNER/NAME@COMMIT:PATH of the matching input file (same order)")
    ap.add_argument("files", nargs="+", help="CRD YAML files")
    args = ap.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    index_path = os.path.join(args.out, "index.json")
    index: dict = {}
    if os.path.exists(index_path):
        with open(index_path, encoding="utf-8") as fh:
            index = json.load(fh)
    entries = {(e["apiVersion"], e["kind"]): e for e in index.get("schemas", [])}

    written = 0
    for i, path in enumerate(args.files):
        with open(path, encoding="utf-8") as fh:
            docs = [d for d in yaml.safe_load_all(fh) if isinstance(d, dict)]
        for doc in docs:
            if doc.get("kind") != "CustomResourceDefinition":
                continue
            for entry, schema in convert_crd(doc, set(args.kind)):
                if i < len(args.source):
                    entry["source"] = args.source[i]
                target = os.path.join(args.out, entry["file"])
                with open(target, "w", encoding="utf-8") as fh:
                    json.dump(schema, fh, indent=1, sort_keys=True)
                    fh.write("\n")
                entries[(entry["apiVersion"], entry["kind"])] = entry
                written += 1
                print(f"{entry['file']}: {os.path.getsize(target)} bytes, "
                      f"{entry['celRulesNotChecked']} CEL rules not checked")
    if not written:
        print("crd_to_jsonschema: no served CRD version matched", file=sys.stderr)
        return 1
    index.setdefault("about", "Strict JSON Schemas generated by crd_to_jsonschema.py from the upstream "
                     "CustomResourceDefinitions named in each entry's source (Apache-2.0 upstream).")
    index["schemas"] = sorted(entries.values(), key=lambda e: (e["apiVersion"], e["kind"]))
    with open(index_path, "w", encoding="utf-8") as fh:
        json.dump(index, fh, indent=2, sort_keys=True)
        fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
