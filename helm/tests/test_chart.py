#!/usr/bin/env python3
"""Chart tests for helm/kong-dp: render with the real Helm SDK and assert facts.

Every render goes through the repository's validator (k8s_validate.py, called
in-process), so each one is also linted (strict) and schema-checked
(Kubernetes 1.29 and the CRD schemas in crd-schemas/). Needs the validator's
pinned venv: run it with any python3 and it re-executes itself there,
creating the venv on first use.

    python3 helm/tests/test_chart.py [NAME_PART...]   # plain runner, exit 1 on failure
    $VENV/bin/python -m pytest helm/tests/test_chart.py   # where pytest is installed

Environment: GW_HELM_VENV / XDG_CACHE_HOME (where the venv lives, see
k8s_validate.py), KONG_DP_TEST_JOBS (parallel tests, default min(8, CPUs)).
"""

from __future__ import annotations

import os
import shlex
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
HELM_DIR = os.path.dirname(HERE)
CHART = os.path.join(HELM_DIR, "kong-dp")
EXAMPLES = os.path.join(HELM_DIR, "examples")

sys.path.insert(0, HERE)
import k8s_validate  # noqa: E402

if __name__ == "__main__":
    k8s_validate.reexec_in_venv(__file__, sys.argv[1:])


# --------------------------------------------------------------- helpers --


class Render:
    def __init__(self, rc: int, output: str, objects: list[dict]):
        self.rc = rc
        self.output = output
        self.objects = objects

    def get(self, kind: str, name_suffix: str = "") -> dict:
        found = [o for o in self.objects
                 if o.get("kind") == kind and o["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}:\n{self.output}"
        return found[0]

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)

    def container(self, name: str = "proxy") -> dict:
        pod = self.get("Deployment")["spec"]["template"]["spec"]
        return next(c for c in pod["containers"] if c["name"] == name)

    def env(self, name: str = "proxy") -> dict:
        out = {}
        for e in self.container(name).get("env", []):
            out[e["name"]] = e.get("value", {k: v for k, v in e.items() if k != "name"})
        return out


def render(*example_files: str, values: dict | None = None, sets: tuple[str, ...] = (),
           kube_version: str = k8s_validate.DEFAULT_KUBE) -> Render:
    outcome = k8s_validate.check_chart(
        CHART, value_files=[os.path.join(EXAMPLES, f) for f in example_files], values=values,
        sets=sets, kube_version=kube_version, release_name="kong", namespace="kong")
    return Render(outcome.rc, outcome.report(), outcome.objects)


def ok(r: Render) -> Render:
    assert r.rc == 0, f"render/validation failed:\n{r.output}"
    return r


def refused(r: Render, *needles: str) -> None:
    assert r.rc != 0, f"expected the render to fail:\n{r.output}"
    for n in needles:
        assert n in r.output, f"missing {n!r} in:\n{r.output}"


# ----------------------------------------------------------------- tests --


def test_defaults_render_and_validate():
    r = ok(render())
    assert r.kinds() == ["Deployment", "Service", "ServiceAccount"]
    dep = r.get("Deployment")
    assert dep["metadata"]["name"] == "kong-kong-dp"
    assert dep["spec"]["replicas"] == 1
    assert r.container()["image"] == "kong-dp/gateway:0.1.0"


def test_probes_point_at_the_status_port():
    r = ok(render())
    c = r.container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    # Only what the gateway serves: no TLS port (kong/kong has 8443).
    assert ports == {"proxy": 8000, "status": 8100}
    assert c["readinessProbe"]["httpGet"] == {"path": "/status/ready", "port": "status", "scheme": "HTTP"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/status", "port": "status", "scheme": "HTTP"}
    env = r.env()
    assert env["KONG_STATUS_LISTEN"] == "0.0.0.0:8100"


def test_prestop_and_termination_grace():
    r = ok(render())
    c = r.container()
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["kong", "quit", "--wait=15"]
    assert r.get("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30


def test_env_maps_to_kong_variables():
    r = ok(render(values={
        "env": {
            "database": "off",
            "foo_bar": "x",
            "nginx_worker_processes": 4,
            "status_listen": "0.0.0.0:9100",  # user env wins over the generated one
            "cluster_cert_key": {"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        },
        "customEnv": {"my_var": "hello"},
        "envFrom": [{"configMapRef": {"name": "extra"}}],
    }))
    env = r.env()
    assert env["KONG_DATABASE"] == "off"
    assert env["KONG_FOO_BAR"] == "x"
    assert env["KONG_NGINX_WORKER_PROCESSES"] == "4"
    assert env["KONG_STATUS_LISTEN"] == "0.0.0.0:9100"
    assert env["KONG_CLUSTER_CERT_KEY"] == {"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    assert env["MY_VAR"] == "hello"
    assert env["KONG_PROXY_LISTEN"] == "0.0.0.0:8000"
    assert env["KONG_PORT_MAPS"] == "80:8000"
    assert env["KONG_ADMIN_LISTEN"] == "off"
    assert env["KONG_NGINX_DAEMON"] == "off"
    assert "KONG_DECLARATIVE_CONFIG" not in env
    names = [e["name"] for e in r.container()["env"]][:-1]  # KONG_NGINX_DAEMON is appended
    assert names == sorted(names)
    assert r.container()["envFrom"] == [{"configMapRef": {"name": "extra"}}]


def test_env_log_boolean_refused():
    refused(render(values={"env": {"proxy_access_log": False}}), "env.proxy_access_log must be a string")


def test_database_other_than_off_refused():
    refused(render(sets=("env.database=postgres",)), 'env.database="postgres" is not supported')


def test_dbless_example_mounts_the_config():
    r = ok(render("dbless.yaml"))
    cm = r.get("ConfigMap")
    assert "_format_version" in cm["data"]["kong.yml"]
    assert r.env()["KONG_DECLARATIVE_CONFIG"] == "/kong_dbless/kong.yml"
    mounts = {m["mountPath"]: m["name"] for m in r.container()["volumeMounts"]}
    assert mounts["/kong_dbless/"] == "kong-custom-dbless-config-volume"
    vols = {v["name"]: v for v in r.get("Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert vols["kong-custom-dbless-config-volume"]["configMap"]["name"] == cm["metadata"]["name"]
    annotations = r.get("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/dbless-config" in annotations


def test_two_dbless_sources_refused():
    refused(render("dbless.yaml", sets=("dblessConfig.configMap=other",)), "only one of dblessConfig")


def test_vpa_and_cpu_hpa_refused():
    refused(render("vpa.yaml", sets=("autoscaling.enabled=true",)),
            "vpa.enabled=true", "VPA and HPA would fight")
    refused(render("hpa.yaml", sets=("vpa.enabled=true",)), "VPA and HPA would fight")
    # A memory target conflicts too.
    refused(render("vpa.yaml", values={"autoscaling": {
        "enabled": True, "metrics": [],
        "targetMemoryUtilizationPercentage": 80}}), "VPA and HPA would fight")


def test_vpa_next_to_custom_metric_hpa_or_off_mode_allowed():
    r = ok(render("hpa-custom-metrics.yaml"))
    assert "VerticalPodAutoscaler" in r.kinds() and "HorizontalPodAutoscaler" in r.kinds()
    r = ok(render("hpa.yaml", sets=("vpa.enabled=true", "vpa.updateMode=Off")))
    assert r.get("VerticalPodAutoscaler")["spec"]["updatePolicy"]["updateMode"] == "Off"


def test_konnect_example_nlb_service():
    r = ok(render("konnect-hybrid.yaml", sets=("proxy.loadBalancerSourceRanges={10.0.0.0/8}",)))
    svc = r.get("Service", "-proxy")
    ann = svc["metadata"]["annotations"]
    assert ann["service.beta.kubernetes.io/aws-load-balancer-type"] == "external"
    assert ann["service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"] == "ip"
    assert ann["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internet-facing"
    spec = svc["spec"]
    assert spec["type"] == "LoadBalancer"
    assert spec["externalTrafficPolicy"] == "Local"
    assert spec["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in spec["ports"]}
    assert ports == {"kong-proxy": (80, 8000)}
    assert svc["metadata"]["labels"]["enable-metrics"] == "true"


def test_konnect_example_cluster_cert_and_env():
    r = ok(render("konnect-hybrid.yaml"))
    env = r.env()
    assert env["KONG_ROLE"] == "data_plane"
    assert env["KONG_CLUSTER_MTLS"] == "pki"
    assert env["KONG_CLUSTER_CERT"] == "/etc/secrets/kong-cluster-cert/tls.crt"
    assert env["KONG_CLUSTER_CERT_KEY"] == "/etc/secrets/kong-cluster-cert/tls.key"
    assert env["KONG_KONNECT_MODE"] == "on"
    assert env["KONG_LUA_SSL_TRUSTED_CERTIFICATE"] == "system"
    for k in ("CONTROL_PLANE", "SERVER_NAME", "TELEMETRY_ENDPOINT", "TELEMETRY_SERVER_NAME"):
        assert env[f"KONG_CLUSTER_{k}"]
    mounts = {m["name"]: m for m in r.container()["volumeMounts"]}
    assert mounts["kong-cluster-cert"]["mountPath"] == "/etc/secrets/kong-cluster-cert"
    assert mounts["kong-cluster-cert"]["readOnly"] is True
    vols = {v["name"]: v for v in r.get("Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert vols["kong-cluster-cert"]["secret"]["secretName"] == "kong-cluster-cert"
    sm = r.get("ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["targetPort"] == "status"


def test_security_context_uid_1000_read_only_root():
    r = ok(render())
    pod = r.get("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = r.container()["securityContext"]
    assert sc["runAsUser"] == 1000 and sc["runAsGroup"] == 1000
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "enabled" not in sc
    mounts = {m["mountPath"] for m in r.container()["volumeMounts"]}
    assert {"/kong_prefix/", "/tmp"} <= mounts
    assert pod["automountServiceAccountToken"] is False


def test_tls_and_unserved_listeners_refused():
    # kong/kong values that ask for what the gateway does not serve yet get
    # a clear refusal, not a pod that refuses to start.
    refused(render(values={"proxy": {"tls": {"enabled": True, "parameters": ["deferred"]}}}),
            "proxy.tls.parameters: deferred not supported yet")
    refused(render(sets=("status.tls.enabled=true",)), "status.tls.enabled=true is not supported yet")
    refused(render(sets=("admin.enabled=true",)), "admin.enabled=true is not supported", "no Admin API")
    # http2 is served on proxy listeners (h2c without ssl), not on status.
    refused(render(values={"status": {"http": {"parameters": ["http2"]}}}),
            "status.http.parameters: http2 not supported yet")
    refused(render(values={"status": {"http": {"parameters": ["proxy_protocol", "reuseport"]}}}),
            "status.http.parameters: proxy_protocol not supported yet")
    refused(render(values={"env": {"proxy_listen": "0.0.0.0:8000 http2 deferred, 0.0.0.0:8443 http2 ssl"}}),
            'env.proxy_listen="0.0.0.0:8000 http2 deferred, 0.0.0.0:8443 http2 ssl": deferred not supported yet')
    refused(render(values={"env": {"status_listen": "0.0.0.0:8100 ssl"}}),
            'env.status_listen="0.0.0.0:8100 ssl": ssl not supported yet')
    refused(render(values={"env": {"admin_listen": "127.0.0.1:8444 http2 ssl"}}),
            "env.admin_listen=", "no Admin API")
    refused(render(values={"env": {"admin_listen": False}}), 'set it to "off" (quoted')
    refused(render(values={"certificates": {"enabled": True}}), "certificates.enabled=true is not supported")
    refused(render(values={"proxy": {"stream": [{"containerPort": 9000, "servicePort": 9000}]}}),
            "proxy.stream / udpProxy are not supported yet")
    refused(render(values={"udpProxy": {"enabled": True}}), "proxy.stream / udpProxy")
    for flavor in ("traditional", "expressions"):
        refused(render(values={"env": {"router_flavor": flavor}}),
                f'env.router_flavor="{flavor}" is not supported yet')
    ok(render(values={"env": {"router_flavor": "traditional_compatible"}}))


def test_proxy_tls_and_proxy_protocol_are_served():
    # kong/kong's default TLS block (http2 ssl) renders, and h2c on the
    # plain listener (gRPC without TLS).
    r = ok(render(sets=("proxy.tls.enabled=true",)))
    env = r.env()
    assert env["KONG_PROXY_LISTEN"] == "0.0.0.0:8000, 0.0.0.0:8443 http2 ssl", env["KONG_PROXY_LISTEN"]
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in r.get("Service", "-proxy")["spec"]["ports"]}
    assert ports == {"kong-proxy": (80, 8000), "kong-proxy-tls": (443, 8443)}
    assert {p["containerPort"] for p in r.container()["ports"]} >= {8000, 8443}
    ok(render(values={"env": {"proxy_listen": "0.0.0.0:8000 proxy_protocol, 0.0.0.0:8443 http2 ssl proxy_protocol"}}))
    r = ok(render(values={"proxy": {"http": {"parameters": ["http2"]}}}))
    assert r.env()["KONG_PROXY_LISTEN"] == "0.0.0.0:8000 http2", r.env()["KONG_PROXY_LISTEN"]


def test_aws_nlb_proxy_protocol_example():
    r = ok(render("aws-nlb-proxy-protocol.yaml"))
    svc = r.get("Service", "-proxy")
    ann = svc["metadata"]["annotations"]
    assert ann["service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"] == "proxy_protocol_v2.enabled=true"
    assert ann["service.beta.kubernetes.io/aws-load-balancer-type"] == "external"
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert ports == {"kong-proxy": (80, 8000), "kong-proxy-tls": (443, 8443)}
    env = r.env()
    assert env["KONG_PROXY_LISTEN"] == "0.0.0.0:8000 proxy_protocol, 0.0.0.0:8443 http2 proxy_protocol ssl", env["KONG_PROXY_LISTEN"]
    assert env["KONG_REAL_IP_HEADER"] == "proxy_protocol"
    assert env["KONG_TRUSTED_IPS"] == "10.0.0.0/8"
    # Probes go to the status port, which takes no PROXY header.
    probe = r.container()["readinessProbe"]["httpGet"]
    assert probe["port"] == "status", probe


def test_served_listen_flags_pass():
    r = ok(render(values={
        "proxy": {"http": {"parameters": ["reuseport", "backlog=16384"]}},
        "env": {"status_listen": "0.0.0.0:8100 reuseport, [::]:8100 ipv6only=on", "admin_listen": "off"},
    }))
    env = r.env()
    assert env["KONG_PROXY_LISTEN"] == "0.0.0.0:8000 reuseport backlog=16384"
    assert env["KONG_STATUS_LISTEN"] == "0.0.0.0:8100 reuseport, [::]:8100 ipv6only=on"


def _dockerfile_runtime() -> tuple[dict, set]:
    """ENV and EXPOSE of the runtime stage of helm/Dockerfile."""
    with open(os.path.join(HELM_DIR, "Dockerfile"), encoding="utf-8") as fh:
        text = fh.read().replace("\\\n", " ")
    runtime = text.split("\nFROM ")[-1]
    env, exposed = {}, set()
    for line in runtime.splitlines():
        words = line.split(None, 1)
        if len(words) < 2:
            continue
        if words[0] == "ENV":
            for item in shlex.split(words[1]):
                k, _, v = item.partition("=")
                env[k] = v
        elif words[0] == "EXPOSE":
            exposed |= {int(p.split("/")[0]) for p in words[1].split()}
    return env, exposed


def test_dockerfile_defaults_match_what_the_binary_serves():
    env, exposed = _dockerfile_runtime()
    listens = [env["KONG_PROXY_LISTEN"], env["KONG_STATUS_LISTEN"]]
    for listen in listens:
        for entry in listen.split(","):
            flags = entry.split()[1:]
            assert not set(flags) & {"ssl", "http2", "proxy_protocol", "deferred"}, listen
    assert env["KONG_ADMIN_LISTEN"] == "off"
    # Every exposed port is one a listener serves, and the other way round.
    ports = {int(e.split()[0].rsplit(":", 1)[1]) for listen in listens for e in listen.split(",")}
    assert exposed == ports == {8000, 8100}, (exposed, ports)
    # The chart's defaults say the same as the image's.
    chart_env = ok(render()).env()
    for k in ("KONG_PROXY_LISTEN", "KONG_STATUS_LISTEN", "KONG_ADMIN_LISTEN"):
        assert chart_env[k] == env[k], (k, chart_env[k], env[k])


def test_ingress_controller_refused():
    refused(render(sets=("ingressController.enabled=true",)),
            "ingressController.enabled=true is not supported")


def test_schema_rejects_typos_in_our_keys():
    refused(render(sets=("vpa.updateMod=Auto",)), "updateMod")
    refused(render(sets=("karpenter.nodePool.limit.cpu=4",)), "limit")
    refused(render(sets=("autoscaling.maxReplica=3",)), "maxReplica")
    refused(render(sets=("vpa.updateMode=Sometimes",)), "updateMode")


def test_schema_lets_kong_kong_keys_through():
    # Keys of the kong/kong chart with no meaning for this chart do no harm.
    r = ok(render(values={
        "postgresql": {"enabled": False},
        "migrations": {"preUpgrade": True, "postUpgrade": True},
        "enterprise": {"enabled": False},
        "manager": {"enabled": False},
        "portal": {"enabled": False},
        "plugins": {},
        "waitImage": {"enabled": True},
        "ingressController": {"enabled": False, "installCRDs": False, "image": {"tag": "3.5"}},
        "proxy": {"ingress": {"enabled": False}, "stream": []},
        "image": {"repository": "kong/kong-gateway", "tag": "3.5"},
    }))
    assert r.container()["image"] == "kong/kong-gateway:3.5"


def test_kong_kong_konnect_dp_values_file():
    # The usual kong/kong Konnect DP values file (docs/kong-chart.md section 1).
    r = ok(render(values={
        "image": {"repository": "kong/kong-gateway", "tag": "3.5"},
        "secretVolumes": ["kong-cluster-cert"],
        "admin": {"enabled": False},
        "env": {
            "role": "data_plane", "database": "off", "cluster_mtls": "pki",
            "cluster_control_plane": "abc.us.cp0.konghq.com:443",
            "cluster_server_name": "abc.us.cp0.konghq.com",
            "cluster_telemetry_endpoint": "abc.us.tp0.konghq.com:443",
            "cluster_telemetry_server_name": "abc.us.tp0.konghq.com",
            "cluster_cert": "/etc/secrets/kong-cluster-cert/tls.crt",
            "cluster_cert_key": "/etc/secrets/kong-cluster-cert/tls.key",
            "lua_ssl_trusted_certificate": "system", "konnect_mode": "on", "vitals": "off",
            "router_flavor": "traditional_compatible", "nginx_worker_processes": "2",
        },
        "ingressController": {"enabled": False, "installCRDs": False},
        "podAnnotations": {"kuma.io/gateway": "enabled"},
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 10, "metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": 75}}}]},
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": "50%"},
        "serviceMonitor": {"enabled": True},
    }))
    assert r.kinds() == ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                         "Service", "ServiceAccount", "ServiceMonitor"]
    env = r.env()
    assert env["KONG_ROLE"] == "data_plane"
    assert env["KONG_ROUTER_FLAVOR"] == "traditional_compatible"
    assert env["KONG_NGINX_WORKER_PROCESSES"] == "2"
    # The file relies on kong/kong's TLS default (on); here TLS is off, so
    # nothing asks for a listener the gateway would refuse.
    assert env["KONG_PROXY_LISTEN"] == "0.0.0.0:8000"
    assert env["KONG_STATUS_LISTEN"] == "0.0.0.0:8100"
    assert env["KONG_ADMIN_LISTEN"] == "off"
    assert {p["name"] for p in r.container()["ports"]} == {"proxy", "status"}
    assert [p["name"] for p in r.get("Service", "-proxy")["spec"]["ports"]] == ["kong-proxy"]


def test_hpa_example():
    r = ok(render("hpa.yaml"))
    hpa = r.get("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] == 1 and hpa["spec"]["maxReplicas"] == 10
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 75}}}]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "kong-kong-dp"}
    assert "replicas" not in r.get("Deployment")["spec"]
    assert "VerticalPodAutoscaler" not in r.kinds()


def test_hpa_cpu_and_memory_targets():
    r = ok(render(sets=("autoscaling.enabled=true", "autoscaling.targetCPUUtilizationPercentage=70",
                        "autoscaling.targetMemoryUtilizationPercentage=85")))
    metrics = r.get("HorizontalPodAutoscaler")["spec"]["metrics"]
    assert [(m["resource"]["name"], m["resource"]["target"]["averageUtilization"]) for m in metrics] == \
        [("cpu", 70), ("memory", 85)]
    # kong/kong's default when nothing is given: CPU 80 %.
    r = ok(render(sets=("autoscaling.enabled=true",)))
    assert r.get("HorizontalPodAutoscaler")["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 80


def test_vpa_example():
    r = ok(render("vpa.yaml"))
    vpa = r.get("VerticalPodAutoscaler")
    assert vpa["apiVersion"] == "autoscaling.k8s.io/v1"
    assert vpa["spec"]["targetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "kong-kong-dp"}
    assert vpa["spec"]["updatePolicy"] == {"updateMode": "Auto", "minReplicas": 1}
    pol = vpa["spec"]["resourcePolicy"]["containerPolicies"][0]
    assert pol["containerName"] == "proxy"
    assert pol["minAllowed"] == {"cpu": "100m", "memory": "128Mi"}
    assert pol["maxAllowed"] == {"cpu": "2", "memory": "4Gi"}
    assert pol["controlledResources"] == ["cpu", "memory"]
    assert pol["controlledValues"] == "RequestsAndLimits"
    assert "HorizontalPodAutoscaler" not in r.kinds()


def test_cluster_autoscaler_example():
    r = ok(render("cluster-autoscaler.yaml"))
    meta = r.get("Deployment")["spec"]["template"]["metadata"]
    assert meta["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "true"
    pod = r.get("Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"eks.amazonaws.com/nodegroup": "kong"}
    tsc = pod["topologySpreadConstraints"][0]
    assert tsc["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "kong"
    pdb = r.get("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == "50%"
    assert pdb["spec"]["selector"]["matchLabels"] == r.get("Deployment")["spec"]["selector"]["matchLabels"]
    # null leaves the annotation out.
    r = ok(render(values={"clusterAutoscaler": {"safeToEvict": None}}))
    annotations = r.get("Deployment")["spec"]["template"]["metadata"].get("annotations") or {}
    assert "cluster-autoscaler.kubernetes.io/safe-to-evict" not in annotations


def test_karpenter_example():
    r = ok(render("karpenter.yaml"))
    np_ = r.get("NodePool")
    assert np_["apiVersion"] == "karpenter.sh/v1"
    assert "namespace" not in np_["metadata"]
    spec = np_["spec"]
    assert spec["template"]["spec"]["nodeClassRef"] == {
        "group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "kong-kong-dp"}
    assert spec["disruption"]["consolidationPolicy"] == "WhenEmptyOrUnderutilized"
    assert spec["disruption"]["consolidateAfter"] == "1m"
    assert spec["limits"] == {"cpu": "40", "memory": "160Gi"}
    keys = {req["key"] for req in spec["template"]["spec"]["requirements"]}
    assert {"karpenter.sh/capacity-type", "karpenter.k8s.aws/instance-category"} <= keys
    nc = r.get("EC2NodeClass")
    assert nc["apiVersion"] == "karpenter.k8s.aws/v1"
    assert nc["spec"]["role"] == "KarpenterNodeRole-kong35-eks129-autoscaling"
    assert nc["spec"]["subnetSelectorTerms"] == [{"tags": {"karpenter.sh/discovery": "kong35-eks129-autoscaling"}}]
    pod = r.get("Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["karpenter.sh/nodepool"] == "kong-kong-dp"


def test_karpenter_needs_a_cluster_name():
    refused(render(sets=("karpenter.enabled=true",)), "karpenter.clusterName")


def test_pdb_with_single_replica_refused():
    refused(render(sets=("podDisruptionBudget.enabled=true",)), "replicaCount <= 1")
    refused(render("hpa.yaml", sets=("podDisruptionBudget.enabled=true",)), "autoscaling.minReplicas <= 1")


def test_daemonset_mode():
    r = ok(render(sets=("deployment.daemonset=true",)))
    ds = r.get("DaemonSet")
    assert "replicas" not in ds["spec"]
    refused(render("hpa.yaml", sets=("deployment.daemonset=true",)), "DaemonSet")


def test_status_service_and_extra_objects():
    r = ok(render(values={
        "status": {"service": {"enabled": True}},
        "extraObjects": [{"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "{{ .Release.Name }}-extra"}, "data": {"a": "b"}}],
    }))
    svc = r.get("Service", "-status")
    assert svc["spec"]["ports"] == [{"name": "status", "port": 8100, "targetPort": "status", "protocol": "TCP"}]
    assert r.get("ConfigMap", "-extra")["metadata"]["name"] == "kong-extra"


def test_servicemonitor_gated_on_capabilities():
    # The validator advertises monitoring.coreos.com/v1 (from the CRD schemas).
    r = ok(render(sets=("serviceMonitor.enabled=true",)))
    sm = r.get("ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"]["enable-metrics"] == "true"


# ------------------------------------- the validator itself must refuse --
# Proof that a green run means something: each of these renders fine with
# Helm but would be refused by a real API server (or is not what it serves).


def _extra(*objects: dict) -> dict:
    return {"extraObjects": list(objects)}


_TARGET = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "kong-kong-dp"}


def test_validator_refuses_bad_resource_quantities():
    refused(render(sets=("resources.requests.memory=300MB",)),
            "FAIL  kong-dp/templates/deployment.yaml",
            "resources.requests.memory: '300MB' is not a valid quantity")
    refused(render(values={"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "500m"}}}),
            "resources.requests.cpu: '2' is more than the limit '500m'")
    refused(render("vpa.yaml", values={"vpa": {"minAllowed": {"memory": "1GB"}}}),
            "FAIL  kong-dp/templates/vpa.yaml", "minAllowed.memory: '1GB' does not match")
    ok(render(values={"resources": {"requests": {"cpu": "250m", "memory": "300Mi"},
                                    "limits": {"cpu": 1, "memory": "1Gi"}}}))


def test_validator_refuses_unknown_fields():
    # CRD kind (strict schema generated from the upstream CRD).
    refused(render(values=_extra({
        "apiVersion": "autoscaling.k8s.io/v1", "kind": "VerticalPodAutoscaler",
        "metadata": {"name": "v"},
        "spec": {"targetRef": _TARGET, "updatePolicy": {"updateMode": "Auto", "minReplica": 1}}})),
        "spec.updatePolicy: Additional properties are not allowed ('minReplica' was unexpected)")
    # Core kind, deep inside the pod template.
    refused(render(values={"securityContext": {"fsGroupp": 1}}), "'fsGroupp' was unexpected")
    refused(render(values=_extra({"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": "c", "labelz": {}}, "data": {}})),
            "'labelz' was unexpected")


def test_validator_refuses_unserved_api_versions_and_unknown_kinds():
    refused(render(values=_extra({
        "apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": "p"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"a": "b"}}}})),
        "PodDisruptionBudget is not served as policy/v1beta1 by Kubernetes 1.29 (served: policy/v1)")
    refused(render(values=_extra({
        "apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
        "spec": {"maxReplicas": 3, "scaleTargetRef": _TARGET}})),
        "not served as autoscaling/v2beta2")
    refused(render(values=_extra({"apiVersion": "karpenter.sh/v1beta1", "kind": "NodePool",
                                  "metadata": {"name": "n"}, "spec": {}})),
            "NodePool is not served as karpenter.sh/v1beta1", "karpenter.sh/v1")
    refused(render(values=_extra({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})),
            "no schema for kind Widget")


def test_validator_applies_api_server_rules():
    # Same kind, namespace and name as the chart's own ServiceAccount.
    refused(render(values=_extra({"apiVersion": "v1", "kind": "ServiceAccount",
                                  "metadata": {"name": "kong-kong-dp"}})),
            "duplicate object")
    refused(render(values=_extra({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "a"}},
                 "template": {"metadata": {"labels": {"app": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "i",
                                                       "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]}}}})),
        "do not match spec.selector", "'v' is not a volume of the pod")
    refused(render(values=_extra({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
        "spec": {"minReplicas": 5, "maxReplicas": 2, "scaleTargetRef": _TARGET}})),
        "spec.maxReplicas: 2 is less than minReplicas 5")
    refused(render(values=_extra({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "p"},
        "spec": {"minAvailable": 1, "maxUnavailable": 1, "selector": {"matchLabels": {"a": "b"}}}})),
        "minAvailable and maxUnavailable are mutually exclusive")
    refused(render(values={"podLabels": {"team": "-bad-"}}), "label team='-bad-'")


def test_validator_lint_is_strict():
    # A deprecation warning from helm lint fails the run.
    refused(render(values=_extra({
        "apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": "p"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"a": "b"}}}})),
        "FAIL  lint", "[WARNING]")


def test_capabilities_advertise_the_crd_api_versions():
    has = '{{ .Capabilities.APIVersions.Has "%s" }}'
    r = ok(render(values=_extra({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "caps"},
                                 "data": {"vpa": has % "autoscaling.k8s.io/v1",
                                          "nodepool": has % "karpenter.sh/v1/NodePool",
                                          "nodeclass": has % "karpenter.k8s.aws/v1",
                                          "sm": has % "monitoring.coreos.com/v1/ServiceMonitor",
                                          "unknown": has % "example.com/v1",
                                          "kube": "{{ .Capabilities.KubeVersion.Version }}"}})))
    data = r.get("ConfigMap", "caps")["data"]
    assert data == {"vpa": "true", "nodepool": "true", "nodeclass": "true", "sm": "true",
                    "unknown": "false", "kube": "v1.29.0"}, data


def test_other_kubernetes_minors():
    # Schemas follow the minor. Chart.yaml supports 1.25, whose PDB has no
    # unhealthyPodEvictionPolicy: the template leaves it out there.
    for minor in ("1.25", "1.26", "1.33", "1.37"):
        r = ok(render("karpenter.yaml", kube_version=minor))
        assert "render" in r.output and f"Kubernetes v{minor}.0" in r.output, r.output
        pdb = r.get("PodDisruptionBudget", "kong-kong-dp")["spec"]
        assert ("unhealthyPodEvictionPolicy" in pdb) == (minor != "1.25"), (minor, pdb)


# ---------------------------------------------------------------- runner --


class _GoLogToStderr:
    """Helm's Go code logs every template `fail` to fd 2 (the same text is in
    the report): capture fd 2 while tests run and pass on anything else."""

    def __enter__(self):
        import tempfile

        sys.stderr.flush()
        self.saved = os.dup(2)
        self.file = tempfile.TemporaryFile()
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        for line in self.file.read().decode("utf-8", "replace").splitlines():
            if " INFO funcMap fail " not in line:
                sys.stderr.write(line + "\n")
        self.file.close()
        return False



def main() -> int:
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and callable(f)]
    if len(sys.argv) > 1:
        tests = [(n, f) for n, f in tests if any(a in n for a in sys.argv[1:])]
    from concurrent.futures import ThreadPoolExecutor

    def run(item):
        name, fn = item
        try:
            fn()
        except Exception as exc:  # AssertionError and render errors
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            lines = [f"{os.path.basename(tb.filename)}:{tb.lineno}: {tb.line}"]
            lines += (str(exc) or type(exc).__name__).splitlines()[:40]
            return name, lines
        return name, None

    passed = failed = 0
    started = time.monotonic()
    workers = int(os.environ.get("KONG_DP_TEST_JOBS") or min(8, os.cpu_count() or 1))
    with _GoLogToStderr(), ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for name, err in pool.map(run, tests):
            if err is None:
                passed += 1
                print(f"PASS  {name}")
            else:
                failed += 1
                print(f"FAIL  {name}")
                for line in err:
                    print(f"        {line}")
    print(f"chart tests: {passed} passed, {failed} failed ({time.monotonic() - started:.1f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
