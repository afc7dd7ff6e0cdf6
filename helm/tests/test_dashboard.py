#!/usr/bin/env python3
"""Tests of the chart's Grafana dashboards (helm/kong-dp/dashboards/*.json)
and of the ConfigMap that ships them (templates/configmap-dashboard.yaml).

Static checks: valid JSON, unique panel ids and titles, a layout that fits
Grafana's 24-column grid without overlaps, a Prometheus datasource and
non-empty targets on every panel, dashboard variables defined and used only
in regex matchers, and every metric name an expression reads exported by the
gateway (names parsed from gateway/src/metrics.rs and the hybrid link's
families in config-sync). Whether each expression returns data is checked
on a real Prometheus by tests/tests/prometheus_real.rs.

The ConfigMap is rendered with the real Helm SDK through k8s_validate.py
(strict lint and schemas), so this re-executes itself in the validator's
venv like test_chart.py.

    python3 helm/tests/test_dashboard.py [NAME_PART...]
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
HELM_DIR = os.path.dirname(HERE)
REPO = os.path.dirname(HELM_DIR)
CHART = os.path.join(HELM_DIR, "kong-dp")
DASHBOARDS = os.path.join(CHART, "dashboards")
EXAMPLES = os.path.join(HELM_DIR, "examples")

sys.path.insert(0, HERE)
import k8s_validate  # noqa: E402

if __name__ == "__main__":
    k8s_validate.reexec_in_venv(__file__, sys.argv[1:])

# Grafana's built-in variables (not defined by the dashboard).
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s",
                    "__range_ms", "__from", "__to", "__dashboard", "__org", "__user"}

# The prometheus crate's process collector (gateway/src/metrics.rs registers
# it on Linux); its names are not string literals in our sources.
PROCESS_FAMILIES = {"process_cpu_seconds_total", "process_open_fds", "process_max_fds",
                    "process_virtual_memory_bytes", "process_virtual_memory_max_bytes",
                    "process_resident_memory_bytes", "process_start_time_seconds", "process_threads"}

VAR_RE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::\w+)?\]\]|\$(\w+)")


# --------------------------------------------------------------- helpers --


def dashboard_files() -> list[str]:
    return sorted(os.path.join(DASHBOARDS, f) for f in os.listdir(DASHBOARDS) if f.endswith(".json"))


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def all_panels(dash: dict) -> list[dict]:
    """Top-level panels and the panels of collapsed rows."""
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def query_panels(dash: dict) -> list[dict]:
    return [p for p in all_panels(dash) if p.get("type") != "row"]


def strip_strings(expr: str) -> str:
    """The expression with its quoted strings blanked (label values are not names)."""
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def metric_names(expr: str) -> set[str]:
    # Every family we export starts with kong_ or process_.
    return set(re.findall(r"\b((?:kong|process)_[a-zA-Z0-9_:]*)", strip_strings(expr)))


def exported_families() -> tuple[set[str], set[str]]:
    """(every family name, the histogram ones) the gateway can export."""
    with open(os.path.join(REPO, "gateway/src/metrics.rs"), encoding="utf-8") as fh:
        metrics_rs = fh.read()
    with open(os.path.join(REPO, "config-sync/src/cluster/mod.rs"), encoding="utf-8") as fh:
        cluster_rs = fh.read()
    # Names are the string literals given to the metric constructors.
    names = set(re.findall(r'"(kong_[a-z0-9_]+)"', metrics_rs))
    names |= set(re.findall(r"# TYPE (kong_[a-z0-9_]+) ", cluster_rs))
    histograms = set(re.findall(r'histogram_vec\(\s*&\w+,\s*"(kong_[a-z0-9_]+)"', metrics_rs))
    histograms |= set(re.findall(r'HistogramOpts::new\(\s*"(kong_[a-z0-9_]+)"', metrics_rs))
    # Drop sample names written out in unit tests and docs (_bucket, ...).
    names = {n for n in names if not any(n.endswith(s) and n[: -len(s)] in histograms
                                         for s in ("_bucket", "_sum", "_count"))}
    return names | PROCESS_FAMILIES, histograms


def known_metric(name: str, families: set[str], histograms: set[str]) -> bool:
    if name in families:
        return True
    return any(name.endswith(s) and name[: -len(s)] in histograms for s in ("_bucket", "_sum", "_count"))


def render(values: dict | None = None, *example_files: str) -> k8s_validate.Outcome:
    return k8s_validate.check_chart(
        CHART, value_files=[os.path.join(EXAMPLES, f) for f in example_files], values=values,
        release_name="kong", namespace="kong")


def config_maps(outcome) -> list[dict]:
    assert outcome.rc == 0, f"render/validation failed:\n{outcome.report()}"
    return [o for o in outcome.objects
            if o.get("kind") == "ConfigMap" and o["metadata"]["name"].endswith("-dashboards")]


# ----------------------------------------------------------------- tests --


def test_dashboards_exist_and_parse():
    files = dashboard_files()
    assert files, f"no dashboards in {DASHBOARDS}"
    for f in files:
        d = load(f)
        for key in ("title", "uid", "panels", "templating", "schemaVersion"):
            assert key in d, f"{f}: no {key}"
        assert d["schemaVersion"] >= 36, f"{f}: schemaVersion {d['schemaVersion']}"
        assert d.get("id") is None, f"{f}: a provisioned dashboard must not carry a database id"
        assert len(json.dumps(d)) < 900_000, f"{f}: too large for a ConfigMap"


def test_datasource_variable():
    for f in dashboard_files():
        variables = {v["name"]: v for v in load(f)["templating"]["list"]}
        ds = variables.get("datasource")
        assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", \
            f"{f}: needs a datasource variable of type prometheus: {ds}"
        assert "instance" in variables, f"{f}: no instance variable"
        for v in variables.values():
            if v["type"] == "query":
                assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, (f, v["name"])
                # Used as `label=~"$var"`: "All" must be a regex.
                if v.get("includeAll"):
                    assert v.get("allValue") == ".*", f"{f}: variable {v['name']} needs allValue .*"


def test_panel_ids_and_titles_unique():
    for f in dashboard_files():
        panels = all_panels(load(f))
        ids = [p.get("id") for p in panels]
        assert all(isinstance(i, int) for i in ids), f"{f}: panel without an integer id"
        dup = {i for i in ids if ids.count(i) > 1}
        assert not dup, f"{f}: duplicate panel ids {sorted(dup)}"
        titles = [p.get("title", "") for p in query_panels(load(f))]
        assert all(titles), f"{f}: panel without a title"
        dup = {t for t in titles if titles.count(t) > 1}
        assert not dup, f"{f}: duplicate panel titles {sorted(dup)}"


def test_layout_fits_the_grid_without_overlaps():
    for f in dashboard_files():
        taken: dict[tuple[int, int], int] = {}
        for p in all_panels(load(f)):
            g = p.get("gridPos")
            assert g and all(k in g for k in "hwxy"), f"{f}: panel {p.get('id')} has no gridPos"
            assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, f"{f}: panel {p['id']} {g}"
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in taken, f"{f}: panels {taken[(x, y)]} and {p['id']} overlap"
                    taken[(x, y)] = p["id"]


def test_every_panel_has_a_datasource_and_targets():
    for f in dashboard_files():
        for p in query_panels(load(f)):
            where = f"{os.path.basename(f)}: panel {p['id']} {p['title']!r}"
            assert p.get("datasource") == {"type": "prometheus", "uid": "${datasource}"}, \
                f"{where}: datasource {p.get('datasource')}"
            targets = p.get("targets") or []
            assert targets, f"{where}: no targets"
            refs = [t.get("refId") for t in targets]
            assert all(refs) and len(set(refs)) == len(refs), f"{where}: refIds {refs}"
            for t in targets:
                assert isinstance(t.get("expr"), str) and t["expr"].strip(), f"{where} {t.get('refId')}: empty expr"
                assert t.get("datasource", p["datasource"]) == p["datasource"], f"{where}: target datasource"


def test_variables_are_defined_and_used_as_regexes():
    for f in dashboard_files():
        d = load(f)
        defined = {v["name"] for v in d["templating"]["list"]}
        exprs = [(p["title"], t["expr"]) for p in query_panels(d) for t in p["targets"]]
        exprs += [(f"variable {v['name']}", v.get("definition", "")) for v in d["templating"]["list"]
                  if v["type"] == "query"]
        for title, expr in exprs:
            for m in VAR_RE.finditer(expr):
                name = next(g for g in m.groups() if g)
                if name.isdigit():
                    continue  # label_replace's ${1}, left alone by Grafana
                assert name in defined or name in GRAFANA_BUILTINS, f"{title}: undefined ${name} in {expr}"
                if name in defined:
                    before = expr[: m.start()]
                    assert before.endswith('=~"'), f"{title}: ${name} outside a =~ matcher in {expr}"


def test_every_metric_is_one_the_gateway_exports():
    families, histograms = exported_families()
    # The parser itself: the families the dashboard is about must be found.
    for must in ("kong_http_requests_total", "kong_dp_cgroup_cpu_limit_cores",
                 "kong_control_plane_connected", "kong_data_plane_config_hash_info"):
        assert must in families, f"exported_families() misses {must}: {sorted(families)}"
    assert "kong_request_latency_ms" in histograms and "kong_dp_config_apply_seconds" in histograms
    for f in dashboard_files():
        d = load(f)
        used = [(p["title"], t["expr"]) for p in query_panels(d) for t in p["targets"]]
        used += [(f"variable {v['name']}", v.get("definition", "")) for v in d["templating"]["list"]]
        for title, expr in used:
            for name in metric_names(expr):
                assert known_metric(name, families, histograms), \
                    f"{os.path.basename(f)}: {title}: {name} is not exported by the gateway"


def test_metric_name_parsing():
    assert metric_names('sum(rate(kong_x_total{a=~"kong_not_a_name"}[5m])) / process_y') == \
        {"kong_x_total", "process_y"}
    fam, hist = {"kong_h", "kong_c"}, {"kong_h"}
    assert known_metric("kong_h_bucket", fam, hist) and not known_metric("kong_c_bucket", fam, hist)


def test_helmignore_keeps_the_dashboards():
    path = os.path.join(CHART, ".helmignore")
    patterns = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            patterns = [line.strip() for line in fh if line.strip() and not line.startswith("#")]
    for f in dashboard_files():
        rel = os.path.relpath(f, CHART)
        for pat in patterns:
            p = pat.rstrip("/")
            assert not (fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(os.path.basename(rel), p)
                        or fnmatch.fnmatch("dashboards", p)), f".helmignore {pat!r} drops {rel}"


def test_configmap_off_by_default():
    assert config_maps(render()) == []


def test_configmap_carries_every_dashboard_with_the_sidecar_label():
    (cm,) = config_maps(render({"dashboards": {"enabled": True}}))
    assert cm["metadata"]["namespace"] == "kong"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["labels"]["app.kubernetes.io/name"] == "kong-dp"
    assert sorted(cm["data"]) == sorted(os.path.basename(f) for f in dashboard_files())
    for f in dashboard_files():
        # Byte for byte (the block scalar drops the final newline only).
        with open(f, encoding="utf-8") as fh:
            assert cm["data"][os.path.basename(f)] == fh.read().rstrip("\n"), f"{f} altered in the ConfigMap"
        assert json.loads(cm["data"][os.path.basename(f)]) == load(f)


def test_configmap_label_namespace_and_annotations_configurable():
    values = {"dashboards": {"enabled": True, "namespace": "grafana",
                             "labels": {"grafana_dashboard": None, "dashboards": "kong"},
                             "annotations": {"grafana_folder": "Gateways"}}}
    (cm,) = config_maps(render(values))
    meta = cm["metadata"]
    assert meta["namespace"] == "grafana"
    assert meta["labels"]["dashboards"] == "kong" and "grafana_dashboard" not in meta["labels"], meta
    assert meta["annotations"] == {"grafana_folder": "Gateways"}


def test_schema_rejects_unknown_dashboards_keys():
    outcome = render({"dashboards": {"enabled": True, "label": {"x": "1"}}})
    assert outcome.rc != 0, "a typo under dashboards must be refused"
    assert "label" in outcome.report()


def test_example_renders_the_configmap():
    (cm,) = config_maps(render(None, "grafana-dashboard.yaml"))
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"]["grafana_folder"] == "Kong"


# ---------------------------------------------------------------- runner --


def main() -> int:
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and callable(f)]
    if len(sys.argv) > 1:
        tests = [(n, f) for n, f in tests if any(a in n for a in sys.argv[1:])]
    passed = failed = 0
    started = time.monotonic()
    for name, fn in tests:
        try:
            fn()
        except Exception as exc:  # AssertionError, render and setup errors
            failed += 1
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            print(f"FAIL  {name}")
            print(f"        {os.path.basename(tb.filename)}:{tb.lineno}: {tb.line}")
            for line in (str(exc) or type(exc).__name__).splitlines()[:40]:
                print(f"        {line}")
        else:
            passed += 1
            print(f"PASS  {name}")
    print(f"dashboard tests: {passed} passed, {failed} failed ({time.monotonic() - started:.1f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
