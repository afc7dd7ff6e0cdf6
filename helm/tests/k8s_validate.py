#!/usr/bin/env python3
"""k8s_validate: lint, render and strictly schema-check a Helm chart, offline.

    helm/tests/k8s_validate.py helm/kong-dp -f helm/examples/vpa.yaml [--set k=v]...
        [--kube-version 1.29] [--release-name kong] [--namespace kong]
        [--api-versions GROUP/VERSION]... [--manifests FILE_OR_DIR]...
        [--render-out FILE] [--no-lint | --lenient-lint] [-q]

No cluster, no helm binary and no Go toolchain:
  * `helm lint` (strict: warnings fail) and `helm template` come from Helm's
    own Go SDK through the helm-python-sdk package (import name helm_python);
  * rendering uses release `kong` in namespace `kong` by default, the given
    Kubernetes version, and .Capabilities.APIVersions = Helm's built-in list
    plus every CRD apiVersion (and apiVersion/Kind) in crd-schemas/index.json,
    so templates gated on .Capabilities.APIVersions.Has render;
  * core kinds are checked against kubernetes-validate's strict schemas for
    that Kubernetes minor (unknown fields fail), CRD kinds against the strict
    schemas in crd-schemas/ (plus the core ObjectMeta schema for metadata);
    a kind without any schema fails, and so does a known kind under an
    apiVersion that version does not serve (policy/v1beta1 PDB on 1.29);
  * then rules the API server enforces beyond its OpenAPI schema: duplicate
    objects, workload selectors matching the pod template labels, container
    resource quantities (300Mi, not 300MB; requests <= limits), HPA
    1 <= minReplicas <= maxReplicas, PDB minAvailable xor maxUnavailable,
    label and annotation syntax, volume mounts naming a declared volume,
    unique container/volume names and container port names.
Not checked: CEL rules of CRDs, admission webhooks, server-side defaulting,
references between objects, anything only a live cluster knows.

Output: a PASS/FAIL line per object (and for lint and render) with the
reasons indented below, then `N passed, M failed`. Exit 0 when nothing
failed, 1 when something did, 2 on a usage or setup error.

First use creates a virtualenv at ${GW_HELM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/gw-helm-venv}
and pip-installs the pinned requirements.txt next to this file (~15 s); the
script then re-executes itself there. test_chart.py imports this module and
calls check_chart() in-process.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS = os.path.join(HERE, "requirements.txt")
CRD_SCHEMAS = os.path.join(HERE, "crd-schemas")


class SetupError(Exception):
    """The toolchain could not be installed or started (exit status 2)."""


# ------------------------------------------------------------------ venv --
# Standard library only down to the re-exec: this part runs under any python3,
# before the pinned packages exist.


def venv_dir() -> str:
    explicit = os.environ.get("GW_HELM_VENV")
    if explicit:
        return os.path.abspath(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "gw-helm-venv")


def venv_python() -> str:
    return os.path.join(venv_dir(), "bin", "python")


def running_in_venv() -> bool:
    return os.path.realpath(sys.prefix) == os.path.realpath(venv_dir())


def ensure_venv() -> str:
    """Create the venv and install the pinned requirements once; return its python.

    A marker named after the requirements' hash makes later calls a stat; a
    changed requirements.txt reinstalls. A lock serialises concurrent first runs.
    """
    import fcntl

    venv = venv_dir()
    py = venv_python()
    with open(REQUIREMENTS, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()[:16]
    marker = os.path.join(venv, f".gw-helm-{digest}")
    if os.path.exists(marker) and os.path.exists(py):
        return py
    os.makedirs(os.path.dirname(venv), exist_ok=True)
    with open(venv + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(marker) and os.path.exists(py):
            return py
        sys.stderr.write(f"k8s_validate: installing the pinned toolchain into {venv} (one-time)\n")
        try:
            if not os.path.exists(py):
                subprocess.run([sys.executable, "-m", "venv", venv], check=True)
            subprocess.run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                            "--no-input", "-r", REQUIREMENTS], check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise SetupError(f"could not set up {venv}: {exc} (python3 needs the venv module: "
                             f"apt-get install python3-venv; PyPI must be reachable)") from exc
        for name in os.listdir(venv):
            if name.startswith(".gw-helm-"):
                os.remove(os.path.join(venv, name))
        with open(marker, "w", encoding="utf-8") as fh:
            fh.write(f"installed from {REQUIREMENTS}\n")
    return py


def reexec_in_venv(script: str, argv: list[str]) -> None:
    """Run `script` with the venv's python unless this already is it."""
    if running_in_venv():
        return
    try:
        py = ensure_venv()
    except SetupError as exc:
        sys.stderr.write(f"k8s_validate: {exc}\n")
        sys.exit(2)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    try:
        os.execve(py, [py, os.path.abspath(script), *argv], env)
    except OSError as exc:
        sys.stderr.write(f"k8s_validate: cannot run {py}: {exc}; remove {venv_dir()} and retry\n")
        sys.exit(2)


if __name__ == "__main__":
    reexec_in_venv(__file__, sys.argv[1:])

# ---------------------------------------------------------------------------
# Below: runs inside the venv (third-party imports stay inside functions so
# that importing this module from a plain python3 still works).
# ---------------------------------------------------------------------------

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from decimal import Decimal, InvalidOperation  # noqa: E402
from typing import Any  # noqa: E402

DEFAULT_KUBE = "1.29"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}


@dataclass
class Result:
    status: str  # PASS / FAIL
    label: str
    detail: str = ""
    errors: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    """What one check_chart() call found."""

    results: list[Result]
    objects: list[dict]
    rendered: str  # the manifests as `helm template` would print them
    elapsed: float = 0.0

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if r.status == "FAIL")

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.status == "PASS")

    @property
    def rc(self) -> int:
        return 1 if self.failed else 0

    def report(self, quiet: bool = False) -> str:
        lines = []
        for r in self.results:
            if quiet and r.status == "PASS":
                continue
            head = f"{r.status:<4}  {r.label}" + (f"  [{r.detail}]" if r.detail else "")
            lines.append(head)
            lines += [f"        {e}" for e in r.errors]
        lines.append(f"{self.passed} passed, {self.failed} failed")
        return "\n".join(lines)


def kube_minor(version: str) -> str:
    m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?", version.strip())
    if not m:
        raise SetupError(f"bad Kubernetes version {version!r} (want e.g. 1.29)")
    return f"{m.group(1)}.{m.group(2)}"


# --------------------------------------------------------------- schemas --


class Schemas:
    """Validators for (apiVersion, kind) for one Kubernetes minor, built lazily."""

    def __init__(self, minor: str, crd_dir: str = CRD_SCHEMAS) -> None:
        import importlib.resources

        import jsonschema
        from referencing import Registry, Resource

        self.minor = minor
        root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
        self.core_dir = str(root / f"v{minor}.0-local-strict")
        if not os.path.isdir(self.core_dir):
            have = sorted((p.name[1:].rsplit(".", 1)[0] for p in root.iterdir()
                           if p.name.endswith("-local-strict")),
                          key=lambda v: tuple(int(x) for x in v.split(".")[:2]))
            raise SetupError(f"kubernetes-validate has no schemas for Kubernetes {minor} "
                             f"(it has {have[0]} .. {have[-1]})")
        with open(os.path.join(self.core_dir, "_definitions.json"), encoding="utf-8") as fh:
            defs = json.load(fh)
        self.registry = Registry().with_resource(defs["$id"], Resource.from_contents(defs))
        self.core_files = set(os.listdir(self.core_dir))
        self.meta = jsonschema.Draft202012Validator(
            {"$ref": f"{defs['$id']}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
            registry=self.registry)

        self.crd_dir = crd_dir
        index_path = os.path.join(crd_dir, "index.json")
        try:
            with open(index_path, encoding="utf-8") as fh:
                entries = json.load(fh)["schemas"]
        except (OSError, ValueError, KeyError) as exc:
            raise SetupError(f"cannot read the CRD schema index {index_path}: {exc}") from exc
        self.crds = {(e["apiVersion"], e["kind"]): e for e in entries}
        self._lock = threading.Lock()
        self._found: dict[tuple[str, str], tuple[Any, str]] = {}

    def capabilities(self) -> list[str]:
        """CRD API versions to advertise, in both forms .Capabilities.APIVersions.Has takes."""
        return sorted({av for (av, kind) in self.crds} | {f"{av}/{kind}" for (av, kind) in self.crds})

    @staticmethod
    def core_file(api_version: str, kind: str) -> str:
        # kubernetes-validate's naming: "rbac.authorization.k8s.io/v1" -> "rbac-v1".
        group_version = re.sub(r"^([^./]*)(?:[.][^/]*)?/", r"\1-", api_version)
        return f"{kind.lower()}-{group_version}.json"

    def lookup(self, api_version: str, kind: str) -> tuple[Any, str]:
        """(validator, origin) or (None, why not)."""
        key = (api_version, kind)
        with self._lock:
            if key not in self._found:
                self._found[key] = self._load(api_version, kind)
            return self._found[key]

    def _load(self, api_version: str, kind: str) -> tuple[Any, str]:
        import jsonschema

        if (api_version, kind) in self.crds:
            entry = self.crds[(api_version, kind)]
            with open(os.path.join(self.crd_dir, entry["file"]), encoding="utf-8") as fh:
                return jsonschema.Draft202012Validator(json.load(fh)), f"crd-schemas/{entry['file']}"
        schema = self._core_schema(self.core_file(api_version, kind), api_version, kind)
        if schema is not None:
            return (jsonschema.Draft202012Validator(schema, registry=self.registry),
                    f"Kubernetes {self.minor}")
        served = self._served_versions(kind)
        if served:
            return None, (f"{kind} is not served as {api_version} by Kubernetes {self.minor} "
                          f"(served: {', '.join(served)})")
        return None, (f"no schema for kind {kind} ({api_version}): not a Kubernetes {self.minor} "
                      f"kind and not in helm/tests/crd-schemas/index.json")

    def _core_schema(self, name: str, api_version: str, kind: str):
        if name not in self.core_files:
            return None
        with open(os.path.join(self.core_dir, name), encoding="utf-8") as fh:
            schema = json.load(fh)
        group, _, version = api_version.rpartition("/")
        # The file name drops the group's domain, so "apps.example.com/v1"
        # would find apps/v1's file: the schema's own GVK list decides.
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            if (gvk.get("group", ""), gvk.get("version"), gvk.get("kind")) == (group, version, kind):
                return schema
        return None

    def _served_versions(self, kind: str) -> list[str]:
        out = {av for (av, k) in self.crds if k == kind}
        for name in self.core_files:
            if name.startswith(kind.lower() + "-"):
                with open(os.path.join(self.core_dir, name), encoding="utf-8") as fh:
                    gvks = json.load(fh).get("x-kubernetes-group-version-kind") or []
                out |= {f"{g['group']}/{g['version']}" if g.get("group") else g["version"]
                        for g in gvks if g.get("kind") == kind}
        return sorted(out)


_SCHEMAS: dict[tuple[str, str], Schemas] = {}
_SCHEMAS_LOCK = threading.Lock()


def schemas_for(minor: str, crd_dir: str = CRD_SCHEMAS) -> Schemas:
    with _SCHEMAS_LOCK:
        key = (minor, os.path.abspath(crd_dir))
        if key not in _SCHEMAS:
            _SCHEMAS[key] = Schemas(minor, crd_dir)
        return _SCHEMAS[key]


def _where(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + str(part))
    return out or "(root)"


def schema_errors(validator, obj, prefix: str = "", limit: int = 8) -> list[str]:
    from jsonschema.exceptions import best_match

    errors = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    out = []
    for err in errors[:limit]:
        # For anyOf/oneOf the branch error that got furthest says the most.
        shown = (best_match(err.context) or err) if err.context else err
        where = _where(shown.absolute_path)
        if prefix:
            where = prefix if where == "(root)" else f"{prefix}{'' if where.startswith('[') else '.'}{where}"
        msg = shown.message if len(shown.message) <= 300 else shown.message[:297] + "..."
        out.append(f"{where}: {msg}")
    if len(errors) > limit:
        out.append(f"... and {len(errors) - limit} more schema errors")
    return out


# ------------------------------------------------- API-server-only rules --

_QUANTITY = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
                       r"(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}
_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_DNS1035 = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
_PORT_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")


def parse_quantity(value) -> Decimal | None:
    """A Kubernetes resource.Quantity as a number, or None when the API server refuses it."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str):
        return None
    m = _QUANTITY.fullmatch(value.strip())
    if not m:
        return None
    try:
        number = Decimal(m.group(1))
    except InvalidOperation:
        return None
    suffix = m.group(2) or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    return number.scaleb(int(suffix[1:]))


def _qualified_name_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return "prefix must be a DNS subdomain"
    if not re.fullmatch(_NAME, name):
        return "name part must be 1-63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
    return None


def _label_errors(labels, where: str) -> list[str]:
    if not isinstance(labels, dict):
        return []
    errs = []
    for key, value in labels.items():
        problem = _qualified_name_problem(str(key))
        if problem:
            errs.append(f"{where}: label key {key!r}: {problem}")
        if isinstance(value, str) and value and not re.fullmatch(_NAME, value):
            errs.append(f"{where}: label {key}={value!r}: the value must be at most 63 "
                        "alphanumerics, '-', '_' or '.', starting and ending alphanumeric")
    return errs


def _metadata_errors(obj: dict) -> list[str]:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    errs = _label_errors(meta.get("labels"), "metadata.labels")
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        for key in annotations:
            problem = _qualified_name_problem(str(key))
            if problem:
                errs.append(f"metadata.annotations: key {key!r}: {problem}")
        size = sum(len(str(k)) + len(str(v)) for k, v in annotations.items())
        if size > 256 * 1024:
            errs.append(f"metadata.annotations: {size} bytes in total, the limit is 262144")
    name, kind = meta.get("name"), obj.get("kind")
    if isinstance(name, str):
        if kind == "Service" and not _DNS1035.fullmatch(name):
            errs.append(f"metadata.name: {name!r}: a Service name must be a DNS-1035 label "
                        "(lowercase, starting with a letter, at most 63 characters)")
        elif kind in WORKLOADS | {"ConfigMap", "Secret", "ServiceAccount", "HorizontalPodAutoscaler",
                                  "PodDisruptionBudget", "Job", "Ingress", "NetworkPolicy"} \
                and (len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name)):
            errs.append(f"metadata.name: {name!r}: must be a lowercase DNS subdomain")
    ns = meta.get("namespace")
    if ns is not None and (not isinstance(ns, str) or not _DNS_LABEL.fullmatch(ns)):
        errs.append(f"metadata.namespace: {ns!r}: must be a DNS label")
    return errs


def _selector_matches(selector: dict, labels: dict) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _pod_spec_errors(pod: dict, where: str) -> list[str]:
    errs = []
    volumes = [v.get("name") for v in pod.get("volumes") or [] if isinstance(v, dict)]
    for name in {n for n in volumes if volumes.count(n) > 1}:
        errs.append(f"{where}.volumes: duplicate volume name {name!r}")
    seen_containers: set = set()
    for group in ("initContainers", "containers"):
        for i, c in enumerate(pod.get(group) or []):
            if not isinstance(c, dict):
                continue
            at = f"{where}.{group}[{i}]"
            if c.get("name") in seen_containers:
                errs.append(f"{at}.name: duplicate container name {c.get('name')!r}")
            seen_containers.add(c.get("name"))
            errs += _resource_errors(c.get("resources") or {}, f"{at}.resources")
            paths = set()
            for j, mount in enumerate(c.get("volumeMounts") or []):
                if not isinstance(mount, dict):
                    continue
                if mount.get("name") not in volumes:
                    errs.append(f"{at}.volumeMounts[{j}].name: {mount.get('name')!r} is not a volume of the pod")
                if mount.get("mountPath") in paths:
                    errs.append(f"{at}.volumeMounts[{j}].mountPath: {mount.get('mountPath')!r} is mounted twice")
                paths.add(mount.get("mountPath"))
            for j, port in enumerate(c.get("ports") or []):
                name = port.get("name") if isinstance(port, dict) else None
                if name is not None and not (isinstance(name, str) and len(name) <= 15
                                             and _PORT_NAME.fullmatch(name) and "--" not in name
                                             and re.search("[a-z]", name)):
                    errs.append(f"{at}.ports[{j}].name: {name!r} must be an IANA service name "
                                "(at most 15 lowercase alphanumerics or '-', with a letter)")
    return errs


def _resource_errors(resources: dict, where: str) -> list[str]:
    errs = []
    parsed: dict[str, dict[str, Decimal]] = {}
    for part in ("requests", "limits"):
        values = resources.get(part)
        if not isinstance(values, dict):
            continue
        parsed[part] = {}
        for name, value in values.items():
            q = parse_quantity(value)
            if q is None:
                errs.append(f"{where}.{part}.{name}: {value!r} is not a valid quantity "
                            "(e.g. 300Mi, 1Gi, 500m, 2; not 300MB)")
            elif q < 0:
                errs.append(f"{where}.{part}.{name}: {value!r} must not be negative")
            else:
                parsed[part][name] = q
    for name, request in parsed.get("requests", {}).items():
        limit = parsed.get("limits", {}).get(name)
        if limit is not None and request > limit:
            errs.append(f"{where}.requests.{name}: {resources['requests'][name]!r} is more than "
                        f"the limit {resources['limits'][name]!r}")
    return errs


def _pod_template(obj: dict) -> tuple[dict, str] | None:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    kind = obj.get("kind")
    if kind in WORKLOADS or kind == "Job":
        return spec.get("template") or {}, "spec.template"
    if kind == "CronJob":
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        return job.get("template") or {}, "spec.jobTemplate.spec.template"
    if kind == "Pod":
        return {"metadata": obj.get("metadata") or {}, "spec": spec}, ""
    return None


def api_server_errors(obj: dict) -> list[str]:
    """What the API server refuses although the OpenAPI schema lets it through."""
    errs = _metadata_errors(obj)
    kind = obj.get("kind")
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    found = _pod_template(obj)
    if found is not None:
        template, where = found
        meta = template.get("metadata") if isinstance(template.get("metadata"), dict) else {}
        labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
        if where:
            errs += _label_errors(labels, f"{where}.metadata.labels")
        pod = template.get("spec") if isinstance(template.get("spec"), dict) else {}
        errs += _pod_spec_errors(pod, f"{where}.spec" if where else "spec")
        if kind in WORKLOADS:
            selector = spec.get("selector")
            if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
                errs.append("spec.selector: a non-empty selector is required")
            else:
                errs += _label_errors(selector.get("matchLabels"), "spec.selector.matchLabels")
                if not _selector_matches(selector, labels):
                    errs.append("spec.template.metadata.labels: do not match spec.selector "
                                f"(selector {json.dumps(selector, sort_keys=True)}, labels "
                                f"{json.dumps(labels, sort_keys=True)})")
    if kind == "HorizontalPodAutoscaler":
        low, high = spec.get("minReplicas", 1), spec.get("maxReplicas")
        if isinstance(low, int) and low < 1:
            errs.append(f"spec.minReplicas: {low} must be at least 1")
        if isinstance(low, int) and isinstance(high, int) and high < low:
            errs.append(f"spec.maxReplicas: {high} is less than minReplicas {low}")
    if kind == "PodDisruptionBudget":
        if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
            errs.append("spec: minAvailable and maxUnavailable are mutually exclusive")
        for key in ("minAvailable", "maxUnavailable"):
            value = spec.get(key)
            if isinstance(value, int) and value < 0:
                errs.append(f"spec.{key}: {value} must not be negative")
            if isinstance(value, str) and not re.fullmatch(r"[0-9]+%", value):
                errs.append(f"spec.{key}: {value!r} must be an integer or a percentage like 50%")
    return errs


def check_object(schemas: Schemas, obj, source: str) -> Result:
    if not isinstance(obj, dict):
        return Result("FAIL", source, errors=[f"a {type(obj).__name__}, not an object"])
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    label = f"{source}  {api_version} {kind} {meta.get('namespace') or '-'}/{meta.get('name') or '?'}"
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return Result("FAIL", label, errors=["apiVersion and kind must be set"])
    if not meta.get("name") and not meta.get("generateName"):
        return Result("FAIL", label, errors=["metadata.name is required"])
    validator, origin = schemas.lookup(api_version, kind)
    if validator is None:
        return Result("FAIL", label, errors=[origin])
    errors = schema_errors(validator, obj)
    if origin.startswith("crd-schemas/") and isinstance(obj.get("metadata"), dict):
        errors += schema_errors(schemas.meta, obj["metadata"], prefix="metadata")
    errors += api_server_errors(obj)
    return Result("FAIL" if errors else "PASS", label, detail=origin, errors=errors)


# ----------------------------------------------------------------- chart --


def _deep_merge(base: dict, top: dict) -> dict:
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def _yaml_docs(text: str, source: str) -> list[tuple[Any, str]]:
    import yaml

    out = []
    for i, doc in enumerate(yaml.safe_load_all(text)):
        if doc is None:
            continue
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            out += [(item, f"{source}#{i}.items[{j}]") for j, item in enumerate(doc["items"])]
        else:
            out.append((doc, f"{source}#{i}" if i else source))
    return out


def _manifest_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    found = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files) if f.endswith((".yaml", ".yml", ".json"))]
    return found


def _lint(helm, chart: str, values: dict, kube: str, namespace: str, strict: bool, label: str) -> Result:
    try:
        report = helm.lint(chart, values, kube_version=kube, namespace=namespace, strict=strict)
    except helm.HelmError as exc:
        return Result("FAIL", label, errors=[str(exc).strip()])
    names = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
    worst_allowed = 1 if strict else 2
    messages = report.get("messages") or []
    lines = [f"[{names.get(m.get('severity'), m.get('severity'))}] {m.get('path', '')}: {m.get('error', '')}"
             for m in messages]
    extra = [str(e) for e in report.get("errors") or [] if not any(str(e) in ln for ln in lines)]
    bad = any((m.get("severity") or 0) > worst_allowed for m in messages) or bool(report.get("errors"))
    counts = {s: sum(1 for m in messages if m.get("severity") == s) for s in (2, 3)}
    return Result("FAIL" if bad else "PASS", label,
                  detail=f"{counts[3]} errors, {counts[2]} warnings{'' if strict else ', lenient'}",
                  errors=(lines + extra) if bad else [])


def check_chart(chart: str | None = None, *, value_files: tuple[str, ...] | list[str] = (),
                values: dict | None = None, sets: tuple[str, ...] | list[str] = (),
                kube_version: str = DEFAULT_KUBE, release_name: str = "kong", namespace: str = "kong",
                api_versions: tuple[str, ...] | list[str] = (), manifests: tuple[str, ...] | list[str] = (),
                lint: bool = True, lint_strict: bool = True, crd_dir: str = CRD_SCHEMAS) -> Outcome:
    """Lint + render `chart` (values: files, then `values`, then --set expressions) and
    check every object, plus any plain manifests. Raises SetupError on bad input."""
    started = time.monotonic()
    minor = kube_minor(kube_version)
    kube = f"v{minor}.0"
    schemas = schemas_for(minor, crd_dir)
    results: list[Result] = []
    docs: list[tuple[Any, str]] = []
    rendered_text: list[str] = []

    if chart:
        import helm_python as helm

        chart = os.path.abspath(chart)
        if not os.path.isdir(chart) and not chart.endswith(".tgz"):
            raise SetupError(f"no chart at {chart}")
        merged: dict = {}
        try:
            for path in value_files:
                with open(path, encoding="utf-8") as fh:
                    _deep_merge(merged, helm.values_from_yaml(fh.read()) or {})
            if values:
                _deep_merge(merged, json.loads(json.dumps(values)))
            for expr in sets:
                _deep_merge(merged, helm.parse_set_string(expr))
        except (OSError, helm.HelmError) as exc:
            raise SetupError(f"cannot read values: {exc}") from exc
        label = os.path.relpath(chart)
        if lint:
            results.append(_lint(helm, chart, merged, kube, namespace, lint_strict, f"lint {label}"))
        # Chart.render() has no capability options; the library's render call
        # takes kube_version and api_versions like `helm template` does.
        from helm_python import _native

        opts = {"name": release_name, "namespace": namespace, "is_install": True,
                "kube_version": kube, "api_versions": sorted(set(schemas.capabilities()) | set(api_versions))}
        try:
            with helm.Chart.load(chart) as loaded:
                crd_files = [(c.get("filename") or c.get("name"), c.get("data", "")) for c in loaded.crds]
                out = json.loads(_native.call_string("helm_render", loaded._raw(), json.dumps(merged),
                                                     json.dumps(opts)))
            results.append(Result("PASS", f"render {label}",
                                  detail=f"release {release_name}, namespace {namespace}, Kubernetes {kube}"))
        except helm.HelmError as exc:
            results.append(Result("FAIL", f"render {label}", errors=str(exc).strip().splitlines()))
            crd_files, out = [], {}
        for name, text in crd_files + [(t, out[t]) for t in sorted(out)]:
            if name.endswith("NOTES.txt") or not text.strip():
                continue
            rendered_text.append(f"---\n# Source: {name}\n{text.strip()}\n")
            try:
                docs += _yaml_docs(text, name)
            except Exception as exc:  # any YAML error: the object cannot be applied
                results.append(Result("FAIL", name, errors=[f"not valid YAML: {exc}"]))

    for path in manifests:
        files = _manifest_files(path)
        if not files:
            raise SetupError(f"{path}: no such file, or no .yaml/.yml/.json in it")
        for name in files:
            try:
                with open(name, encoding="utf-8") as fh:
                    docs += _yaml_docs(fh.read(), os.path.relpath(name))
            except Exception as exc:
                results.append(Result("FAIL", os.path.relpath(name), errors=[f"cannot parse: {exc}"]))

    seen: dict[tuple, str] = {}
    for obj, source in docs:
        res = check_object(schemas, obj, source)
        if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict) and obj["metadata"].get("name"):
            group = str(obj.get("apiVersion", "")).rpartition("/")[0]
            key = (group, obj.get("kind"), obj["metadata"].get("namespace") or namespace, obj["metadata"]["name"])
            if key in seen:
                res.status = "FAIL"
                res.errors.append(f"duplicate object: same group, kind, namespace and name as {seen[key]}")
            else:
                seen[key] = source
        results.append(res)

    return Outcome(results, [d for d, _ in docs if isinstance(d, dict)], "".join(rendered_text),
                   elapsed=time.monotonic() - started)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="k8s_validate.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("chart", nargs="?", help="chart directory (or .tgz)")
    ap.add_argument("-f", "--values", action="append", default=[], metavar="FILE",
                    help="values file (repeatable; later files win)")
    ap.add_argument("--set", action="append", default=[], metavar="EXPR", help="helm --set expression")
    ap.add_argument("--kube-version", default=DEFAULT_KUBE, help="Kubernetes version (default %(default)s)")
    ap.add_argument("--release-name", default="kong", help="default %(default)s")
    ap.add_argument("--namespace", default="kong", help="default %(default)s")
    ap.add_argument("--api-versions", action="append", default=[], metavar="GV",
                    help="extra .Capabilities.APIVersions entry (the CRD ones are always there)")
    ap.add_argument("--manifests", action="append", default=[], metavar="PATH",
                    help="plain YAML file or folder to check as well")
    ap.add_argument("--render-out", metavar="FILE", help="write the rendered manifests here")
    ap.add_argument("--no-lint", action="store_true", help="skip helm lint")
    ap.add_argument("--lenient-lint", action="store_true", help="lint warnings do not fail")
    ap.add_argument("--crd-schemas", default=CRD_SCHEMAS, help="CRD schema folder (default %(default)s)")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only failures and the summary")
    args = ap.parse_args(argv)
    if not args.chart and not args.manifests:
        ap.print_usage(sys.stderr)
        sys.stderr.write("k8s_validate: give a chart and/or --manifests\n")
        return 2
    try:
        outcome = check_chart(args.chart, value_files=args.values, sets=args.set,
                              kube_version=args.kube_version, release_name=args.release_name,
                              namespace=args.namespace, api_versions=args.api_versions,
                              manifests=args.manifests, lint=not args.no_lint,
                              lint_strict=not args.lenient_lint, crd_dir=args.crd_schemas)
    except SetupError as exc:
        sys.stderr.write(f"k8s_validate: {exc}\n")
        return 2
    if args.render_out:
        with open(args.render_out, "w", encoding="utf-8") as fh:
            fh.write(outcome.rendered)
    print(outcome.report(quiet=args.quiet))
    sys.stderr.write(f"k8s_validate: {len(outcome.objects)} objects, Kubernetes "
                     f"{kube_minor(args.kube_version)}, {outcome.elapsed:.2f}s\n")
    return outcome.rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
