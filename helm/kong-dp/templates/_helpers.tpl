{{/* vim: set filetype=mustache: */}}

{{- define "kong-dp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart name>, or the release name when it already contains the chart name. */}}
{{- define "kong-dp.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "kong-dp.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kong-dp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "kong-dp.metaLabels" -}}
app.kubernetes.io/name: {{ include "kong-dp.name" . }}
helm.sh/chart: {{ include "kong-dp.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- range $k, $v := .Values.extraLabels }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end -}}

{{/* Stable selector (never changes with chart or image versions). */}}
{{- define "kong-dp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kong-dp.name" . }}
app.kubernetes.io/component: app
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end -}}

{{- define "kong-dp.serviceAccountName" -}}
{{- if .Values.deployment.serviceAccount.create -}}
{{- default (include "kong-dp.fullname" .) .Values.deployment.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.deployment.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kong-dp.image" -}}
{{- if .unifiedRepoTag -}}
{{- .unifiedRepoTag -}}
{{- else -}}
{{- printf "%s:%s" (required "image.repository is required" .repository) (toString (required "image.tag is required" .tag)) -}}
{{- end -}}
{{- end -}}

{{- define "kong-dp.dblessConfig.fullname" -}}
{{- default "kong-custom-dbless-config" .Values.dblessConfig.nameOverride -}}
{{- end -}}

{{/* Number of DB-less config sources given (configMap, secret, config). */}}
{{- define "kong-dp.dblessSources" -}}
{{- $n := 0 -}}
{{- with .Values.dblessConfig -}}
{{- if .configMap }}{{ $n = add1 $n }}{{ end -}}
{{- if .secret }}{{ $n = add1 $n }}{{ end -}}
{{- if .config }}{{ $n = add1 $n }}{{ end -}}
{{- end -}}
{{- $n -}}
{{- end -}}

{{/*
A Kong listen string ("0.0.0.0:8000, 0.0.0.0:8443 http2 ssl") for a
service block with http/tls sub-blocks, or "off". Default address: 0.0.0.0
(kong/kong also adds [::]; set `addresses` for IPv6).
*/}}
{{- define "kong-dp.listen" -}}
{{- $out := list -}}
{{- $addrs := default (list "0.0.0.0") .addresses -}}
{{- if and .http .http.enabled -}}
  {{- range $addrs -}}
    {{- $parts := list (printf "%s:%v" . $.http.containerPort) -}}
    {{- $parts = concat $parts (default (list) $.http.parameters) -}}
    {{- $out = append $out ($parts | join " ") -}}
  {{- end -}}
{{- end -}}
{{- if and .tls .tls.enabled -}}
  {{- range $addrs -}}
    {{- $parts := list (printf "%s:%v" . $.tls.containerPort) -}}
    {{- $parts = concat $parts (default (list) $.tls.parameters) -}}
    {{- $parts = append $parts "ssl" -}}
    {{- $out = append $out ($parts | uniq | join " ") -}}
  {{- end -}}
{{- end -}}
{{- if $out -}}{{ $out | join ", " }}{{- else -}}off{{- end -}}
{{- end -}}

{{/*
The listen flags among .flags that the gateway refuses on a listener of
kind .kind: proxy listeners serve ssl, proxy_protocol and http2 (ALPN h2
with ssl, h2c beside HTTP/1.1 without); status listeners serve none of them; neither serves deferred accept or TCP keepalive. .tls: the
flags belong to a TLS entry (ssl is added to it). Joined with ", ";
empty when none.
*/}}
{{- define "kong-dp.unservedFlags" -}}
{{- $bad := list -}}
{{- $served := ternary (list "ssl" "proxy_protocol" "http2") (list) (eq .kind "proxy") -}}
{{- range .flags -}}
  {{- $f := toString . -}}
  {{- if and (not (has $f $served)) (or (has $f (list "ssl" "http2" "proxy_protocol" "deferred")) (and (hasPrefix "so_keepalive=" $f) (ne $f "so_keepalive=off"))) -}}
    {{- $bad = append $bad $f -}}
  {{- end -}}
{{- end -}}
{{- $bad | uniq | join ", " -}}
{{- end -}}

{{- define "kong-dp.portMaps" -}}
{{- $maps := list -}}
{{- if .http.enabled -}}{{- $maps = append $maps (printf "%v:%v" .http.servicePort .http.containerPort) -}}{{- end -}}
{{- if .tls.enabled -}}{{- $maps = append $maps (printf "%v:%v" .tls.servicePort .tls.containerPort) -}}{{- end -}}
{{- $maps | join ", " -}}
{{- end -}}

{{/*
Container environment, built like kong/kong's kong.env:
  1. variables the chart generates (listens, logs, declarative config);
  2. every .Values.env key k -> KONG_<upper k> (wins over 1);
  3. every .Values.customEnv key k -> <upper k> (wins over both).
Rendered sorted by name; a map value (e.g. {valueFrom: ...}) is emitted under
the name as is, a string containing "valueFrom" is emitted raw, anything else
becomes `value: "<quoted>"`.
*/}}
{{- define "kong-dp.env" -}}
{{- $auto := dict -}}
{{- $_ := set $auto "KONG_DATABASE" "off" -}}
{{- $_ := set $auto "KONG_PROXY_ACCESS_LOG" "/dev/stdout" -}}
{{- $_ := set $auto "KONG_PROXY_ERROR_LOG" "/dev/stderr" -}}
{{- $_ := set $auto "KONG_ADMIN_ACCESS_LOG" "/dev/stdout" -}}
{{- $_ := set $auto "KONG_ADMIN_ERROR_LOG" "/dev/stderr" -}}
{{- $_ := set $auto "KONG_STATUS_ACCESS_LOG" "off" -}}
{{- $_ := set $auto "KONG_STATUS_ERROR_LOG" "/dev/stderr" -}}
{{- if .Values.proxy.enabled -}}
  {{- $_ := set $auto "KONG_PROXY_LISTEN" (include "kong-dp.listen" .Values.proxy) -}}
  {{- $_ := set $auto "KONG_PORT_MAPS" (include "kong-dp.portMaps" .Values.proxy) -}}
{{- else -}}
  {{- $_ := set $auto "KONG_PROXY_LISTEN" "off" -}}
{{- end -}}
{{- if .Values.status.enabled -}}
  {{- $_ := set $auto "KONG_STATUS_LISTEN" (include "kong-dp.listen" .Values.status) -}}
{{- else -}}
  {{- $_ := set $auto "KONG_STATUS_LISTEN" "off" -}}
{{- end -}}
{{- if .Values.admin.enabled -}}
  {{- $_ := set $auto "KONG_ADMIN_LISTEN" (include "kong-dp.listen" .Values.admin) -}}
{{- else -}}
  {{- $_ := set $auto "KONG_ADMIN_LISTEN" "off" -}}
{{- end -}}
{{- $_ := set $auto "KONG_STREAM_LISTEN" "off" -}}
{{- $_ := set $auto "KONG_CLUSTER_LISTEN" "off" -}}
{{- if eq (include "kong-dp.dblessSources" .) "1" -}}
  {{- $_ := set $auto "KONG_DECLARATIVE_CONFIG" "/kong_dbless/kong.yml" -}}
{{- end -}}

{{- $user := dict -}}
{{- range $key, $val := .Values.env -}}
  {{- if and (contains "_log" $key) (kindIs "bool" $val) -}}
    {{- fail (printf "env.%s must be a string: write \"off\" (quoted). Unquoted, YAML turns it into a boolean and Kong rejects it" $key) -}}
  {{- end -}}
  {{- $_ := set $user (printf "KONG_%s" (upper $key)) $val -}}
{{- end -}}

{{- $custom := dict -}}
{{- range $key, $val := .Values.customEnv -}}
  {{- $_ := set $custom (upper $key) $val -}}
{{- end -}}

{{- $all := mergeOverwrite $auto $user $custom -}}
{{- range $name := keys $all | sortAlpha }}
{{- $val := get $all $name }}
{{- if kindIs "map" $val }}
- name: {{ $name }}
{{ toYaml $val | indent 2 }}
{{- else if and (kindIs "string" $val) (regexMatch "valueFrom" $val) }}
- name: {{ $name }}
{{ $val | indent 2 }}
{{- else }}
- name: {{ $name }}
  value: {{ $val | toString | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* HPA metrics list, as a YAML list. */}}
{{- define "kong-dp.hpaMetrics" -}}
{{- $a := .Values.autoscaling -}}
{{- $metrics := list -}}
{{- $given := default (list) $a.metrics -}}
{{- range $given -}}
  {{- if eq (toString .type) "Resource" -}}
    {{- if and (eq (toString (dig "resource" "name" "" .)) "cpu") $a.targetCPUUtilizationPercentage -}}
      {{- fail "autoscaling: CPU is set twice, in targetCPUUtilizationPercentage and in metrics; keep one" -}}
    {{- end -}}
    {{- if and (eq (toString (dig "resource" "name" "" .)) "memory") $a.targetMemoryUtilizationPercentage -}}
      {{- fail "autoscaling: memory is set twice, in targetMemoryUtilizationPercentage and in metrics; keep one" -}}
    {{- end -}}
  {{- end -}}
{{- end -}}
{{- if $a.targetCPUUtilizationPercentage -}}
  {{- $metrics = append $metrics (dict "type" "Resource" "resource" (dict "name" "cpu" "target" (dict "type" "Utilization" "averageUtilization" (int $a.targetCPUUtilizationPercentage)))) -}}
{{- end -}}
{{- if $a.targetMemoryUtilizationPercentage -}}
  {{- $metrics = append $metrics (dict "type" "Resource" "resource" (dict "name" "memory" "target" (dict "type" "Utilization" "averageUtilization" (int $a.targetMemoryUtilizationPercentage)))) -}}
{{- end -}}
{{- $metrics = concat $metrics $given -}}
{{- if not $metrics -}}
  {{- $metrics = list (dict "type" "Resource" "resource" (dict "name" "cpu" "target" (dict "type" "Utilization" "averageUtilization" 80))) -}}
{{- end -}}
{{- toYaml $metrics -}}
{{- end -}}

{{/* "true" when the HPA scales on CPU or memory (Resource or ContainerResource). */}}
{{- define "kong-dp.hpaUsesCpuOrMemory" -}}
{{- $hit := false -}}
{{- if .Values.autoscaling.enabled -}}
{{- range (include "kong-dp.hpaMetrics" . | fromYamlArray) -}}
  {{- if eq (toString .type) "Resource" -}}
    {{- if has (toString (dig "resource" "name" "" .)) (list "cpu" "memory") -}}{{- $hit = true -}}{{- end -}}
  {{- else if eq (toString .type) "ContainerResource" -}}
    {{- if has (toString (dig "containerResource" "name" "" .)) (list "cpu" "memory") -}}{{- $hit = true -}}{{- end -}}
  {{- end -}}
{{- end -}}
{{- end -}}
{{- $hit -}}
{{- end -}}

{{/* Guard rails: run from the workload template so every render checks them. */}}
{{- define "kong-dp.validate" -}}
{{- if .Values.ingressController.enabled -}}
{{- fail "ingressController.enabled=true is not supported: kong-dp deploys only the Kong data plane, without the Kong Ingress Controller. Set ingressController.enabled=false (as Konnect and hybrid data planes do), or use the kong/kong chart for the controller." -}}
{{- end -}}
{{- /* What the gateway does not serve yet is refused here, so a kong/kong
values file asking for it fails to render instead of deploying a pod
that refuses to start (or a Service port nothing listens on). */ -}}
{{- if and .Values.status.enabled .Values.status.tls.enabled -}}
{{- fail "status.tls.enabled=true is not supported yet: the status API is served over plain HTTP only; set status.tls.enabled=false." -}}
{{- end -}}
{{- if .Values.admin.enabled -}}
{{- fail "admin.enabled=true is not supported: the data plane has no Admin API (it is configured by its control plane or by dblessConfig); set admin.enabled=false." -}}
{{- end -}}
{{- if (.Values.certificates | default dict).enabled -}}
{{- fail "certificates.enabled=true is not supported: the chart's cert-manager certificates are not wired; the proxy's default certificate is env.ssl_cert / env.ssl_cert_key (from a Secret in secretVolumes) or the self-signed one generated under the prefix, and the cluster certificate comes from a Secret (secretVolumes plus env.cluster_cert / env.cluster_cert_key); set certificates.enabled=false." -}}
{{- end -}}
{{- if or .Values.proxy.stream (.Values.udpProxy | default dict).enabled -}}
{{- fail "proxy.stream / udpProxy are not supported yet: the data plane serves no TCP/UDP stream listener; remove proxy.stream entries and set udpProxy.enabled=false." -}}
{{- end -}}
{{- range $svc := list "proxy" "status" -}}
  {{- $block := index $.Values $svc -}}
  {{- $what := ternary "proxy listeners serve HTTP/1.1 and HTTP/2, with ssl and proxy_protocol; no deferred accept or TCP keepalive" "the status API is served over plain HTTP/1.1 only" (eq $svc "proxy") -}}
  {{- range $sub := list "http" "tls" -}}
    {{- $l := index $block $sub -}}
    {{- if and $block.enabled $l $l.enabled -}}
      {{- $bad := include "kong-dp.unservedFlags" (dict "kind" $svc "tls" (eq $sub "tls") "flags" (default (list) $l.parameters)) -}}
      {{- if $bad -}}
        {{- fail (printf "%s.%s.parameters: %s not supported yet: %s; remove them." $svc $sub $bad $what) -}}
      {{- end -}}
    {{- end -}}
  {{- end -}}
{{- end -}}
{{- range $key := list "proxy_listen" "status_listen" -}}
  {{- $v := index $.Values.env $key -}}
  {{- if kindIs "string" $v -}}
    {{- $kind := ternary "proxy" "status" (eq $key "proxy_listen") -}}
    {{- range $entry := splitList "," $v -}}
      {{- $bad := include "kong-dp.unservedFlags" (dict "kind" $kind "tls" false "flags" (splitList " " (trim $entry))) -}}
      {{- if $bad -}}
        {{- fail (printf "env.%s=%q: %s not supported yet: %s; remove them." $key $v $bad (ternary "proxy listeners serve ssl, proxy_protocol and http2, no deferred accept or TCP keepalive" "status listeners serve plain HTTP/1.1 only" (eq $kind "proxy"))) -}}
      {{- end -}}
    {{- end -}}
  {{- end -}}
{{- end -}}
{{- if hasKey .Values.env "admin_listen" -}}
  {{- if ne (toString (index .Values.env "admin_listen")) "off" -}}
    {{- fail (printf "env.admin_listen=%q is not supported: the data plane has no Admin API; remove it or set it to \"off\" (quoted, else YAML reads a boolean)." (toString (index .Values.env "admin_listen"))) -}}
  {{- end -}}
{{- end -}}
{{- if hasKey .Values.env "router_flavor" -}}
  {{- if ne (toString (index .Values.env "router_flavor")) "traditional_compatible" -}}
    {{- fail (printf "env.router_flavor=%q is not supported yet: the data plane routes as Kong's default flavour, traditional_compatible; remove env.router_flavor or set it to traditional_compatible." (toString (index .Values.env "router_flavor"))) -}}
  {{- end -}}
{{- end -}}
{{- if ne (toString .Values.env.database) "off" -}}
{{- fail (printf "env.database=%q is not supported: the data plane is DB-less, set env.database to \"off\"" (toString .Values.env.database)) -}}
{{- end -}}
{{- if gt (int (include "kong-dp.dblessSources" .)) 1 -}}
{{- fail "Ambiguous configuration: set only one of dblessConfig.configMap, dblessConfig.secret and dblessConfig.config." -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled .Values.deployment.daemonset -}}
{{- fail "autoscaling.enabled=true cannot be combined with deployment.daemonset=true: a DaemonSet runs one pod per node and cannot be scaled by an HPA." -}}
{{- end -}}
{{- if and .Values.vpa.enabled (ne (toString .Values.vpa.updateMode) "Off") (eq (include "kong-dp.hpaUsesCpuOrMemory" .) "true") -}}
{{- $vpaRes := default (list "cpu" "memory") .Values.vpa.controlledResources -}}
{{- if or (has "cpu" $vpaRes) (has "memory" $vpaRes) -}}
{{- fail (printf "vpa.enabled=true (updateMode %s) and autoscaling.enabled=true with a CPU/memory metric target the same Deployment: VPA and HPA would fight over the same CPU/memory requests (the VPA docs advise against it). Either disable one of them, set vpa.updateMode=Off (recommendations only), or scale the HPA on custom/external metrics (e.g. kong_dp_requests_in_flight via prometheus-adapter) and drop the cpu/memory targets." (toString .Values.vpa.updateMode)) -}}
{{- end -}}
{{- end -}}
{{- if .Values.podDisruptionBudget.enabled -}}
{{- if and (not .Values.autoscaling.enabled) (le (int .Values.replicaCount) 1) (not .Values.deployment.daemonset) -}}
{{- fail "podDisruptionBudget.enabled=true with replicaCount <= 1 would block every voluntary eviction (drains, VPA, Cluster Autoscaler, Karpenter): raise replicaCount or disable the PDB." -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (le (int .Values.autoscaling.minReplicas) 1) -}}
{{- fail "podDisruptionBudget.enabled=true with autoscaling.minReplicas <= 1 would block voluntary evictions at one replica: raise autoscaling.minReplicas to 2 or disable the PDB." -}}
{{- end -}}
{{- if and (hasKey .Values.podDisruptionBudget "minAvailable") (hasKey .Values.podDisruptionBudget "maxUnavailable") -}}
{{- fail "podDisruptionBudget: set only one of minAvailable and maxUnavailable." -}}
{{- end -}}
{{- end -}}
{{- if and .Values.karpenter.enabled .Values.karpenter.ec2NodeClass.create (not .Values.karpenter.clusterName) -}}
{{- if not (and (or .Values.karpenter.ec2NodeClass.role .Values.karpenter.ec2NodeClass.instanceProfile) .Values.karpenter.ec2NodeClass.subnetSelectorTerms .Values.karpenter.ec2NodeClass.securityGroupSelectorTerms) -}}
{{- fail "karpenter.enabled=true needs karpenter.clusterName (used for the node role KarpenterNodeRole-<cluster> and the karpenter.sh/discovery selector tags), or explicit karpenter.ec2NodeClass.role/instanceProfile, subnetSelectorTerms and securityGroupSelectorTerms." -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Render a value through tpl (strings) for annotations. */}}
{{- define "kong-dp.tpl" -}}
{{- if kindIs "string" .value -}}{{- tpl .value .context -}}{{- else -}}{{- tpl (toYaml .value) .context -}}{{- end -}}
{{- end -}}

{{- define "kong-dp.nodePoolName" -}}
{{- default (include "kong-dp.fullname" .) .Values.karpenter.nodePool.name -}}
{{- end -}}

{{- define "kong-dp.nodeClassName" -}}
{{- default (include "kong-dp.fullname" .) .Values.karpenter.ec2NodeClass.name -}}
{{- end -}}

{{/* securityContext block of the containers ("enabled" is a chart switch, not a field). */}}
{{- define "kong-dp.containerSecurityContext" -}}
{{- if .Values.containerSecurityContext.enabled | default false -}}
securityContext:
  {{- toYaml (omit .Values.containerSecurityContext "enabled") | nindent 2 }}
{{- end -}}
{{- end -}}
