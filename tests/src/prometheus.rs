//! A real Prometheus server for tests, and the PromQL this repository
//! ships, read from the files at test time so that a new dashboard panel or
//! adapter rule is covered without touching the tests.
//!
//! - [`binary`]: Debian's `prometheus` (`scripts/setup` installs it), or
//!   `GW_PROMETHEUS`;
//! - [`Prometheus`]: runs it on a free loopback port with a generated config
//!   (one static target, 1 s scrapes, a temp TSDB) and queries its HTTP API;
//! - [`dashboard_queries`], [`adapter_rules`], [`example_queries`],
//!   [`hpa_pod_metric_names`]: the expressions of
//!   `helm/kong-dp/dashboards/*.json`, of
//!   `helm/examples/prometheus-adapter/rules.yaml` and of any `expr`/`query`
//!   key in `helm/examples/*.yaml` and the chart's values, made concrete the
//!   way Grafana and prometheus-adapter make them;
//! - [`CgroupJail`]: cgroup v1 child groups with a CPU quota and a memory
//!   limit for the one gateway process a test starts, so the cgroup limit
//!   metrics exist.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::gateway::TempDir;
use crate::{free_port, try_request, Proc};

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The Prometheus server binary: `GW_PROMETHEUS`, else `/usr/bin/prometheus`
/// (Debian's package), else `prometheus` on `PATH`.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GW_PROMETHEUS") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let debian = PathBuf::from("/usr/bin/prometheus");
    if debian.is_file() {
        return Some(debian);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    })
}

// ---------------------------------------------------------------------------
// The server.

/// Scrape interval of the generated config. Grafana's `$__rate_interval`
/// is at least four scrape intervals, hence [`RATE_INTERVAL`].
pub const SCRAPE_INTERVAL: &str = "1s";
pub const RATE_INTERVAL: &str = "5s";

/// The labels a Kubernetes scrape (ServiceMonitor) puts on the data plane's
/// series, which the prometheus-adapter rules match on.
pub const NAMESPACE: &str = "kong";
pub const POD: &str = "kong-dp-0";

/// A running Prometheus, killed (by its PID) on drop.
pub struct Prometheus {
    pub port: u16,
    pub proc: Proc,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts `bin` scraping `127.0.0.1:<target_port>/metrics` every second,
    /// with the `namespace`/`pod` labels of a Kubernetes scrape, and waits
    /// (≤ 20 s) until it is ready. Panics with its output otherwise.
    pub fn start(bin: &Path, target_port: u16) -> Prometheus {
        let dir = TempDir::new("prom");
        let config = dir.path().join("prometheus.yml");
        // JSON is YAML: no YAML writer needed.
        let cfg = serde_json::json!({
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "scrape_configs": [{
                "job_name": "kong-dp",
                "scrape_timeout": "900ms",
                "static_configs": [{
                    "targets": [format!("127.0.0.1:{target_port}")],
                    "labels": {"namespace": NAMESPACE, "pod": POD},
                }],
            }],
        });
        std::fs::write(&config, cfg.to_string())
            .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
        let mut last = String::new();
        // free_port() is racy: retry when the port got taken meanwhile.
        for _ in 0..3 {
            let port = free_port();
            let data = dir.path().join(format!("data-{port}"));
            let mut cmd = Command::new(bin);
            cmd.arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--storage.tsdb.retention.time=1h")
                .arg("--log.level=warn")
                // Debian's build serves its console from /usr/share; not needed.
                .arg("--web.console.templates=/nonexistent")
                .arg("--web.console.libraries=/nonexistent");
            let mut proc = Proc::spawn(cmd);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && proc.is_running() {
                if try_request(port, "GET", "/-/ready", &[], b"").is_ok_and(|r| r.status == 200) {
                    return Prometheus {
                        port,
                        proc,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            proc.kill();
            last = proc.output();
            if !last.contains("address already in use") {
                break;
            }
        }
        panic!("prometheus did not become ready; output:\n{last}");
    }

    /// POSTs a form to `/api/v1/<endpoint>` and returns `data`, or the
    /// error Prometheus gave.
    pub fn api(&self, endpoint: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let body = params
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let path = format!("/api/v1/{endpoint}");
        let r = try_request(
            self.port,
            "POST",
            &path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
        .map_err(|e| format!("{path}: {e}"))?;
        let v: Value = serde_json::from_slice(&r.body).map_err(|e| {
            format!(
                "{path}: status {} not JSON ({e}): {}",
                r.status,
                r.body_str()
            )
        })?;
        if v["status"] != "success" {
            return Err(format!(
                "{path}: {} {}",
                v["errorType"].as_str().unwrap_or("?"),
                v["error"].as_str().unwrap_or(&r.body_str())
            ));
        }
        Ok(v["data"].clone())
    }

    /// An instant query at the current time: the result vector (or scalar
    /// as a one-element list).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("query", &[("query", expr)])?;
        Ok(result_list(&data))
    }

    /// A range query (`start`/`end` in Unix seconds, `step` in seconds).
    pub fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<Value>, String> {
        let (s, e, st) = (start.to_string(), end.to_string(), step.to_string());
        let data = self.api(
            "query_range",
            &[("query", expr), ("start", &s), ("end", &e), ("step", &st)],
        )?;
        Ok(result_list(&data))
    }

    /// The series a selector matches (`/api/v1/series`).
    pub fn series(&self, selector: &str) -> Result<Vec<Value>, String> {
        let data = self.api("series", &[("match[]", selector)])?;
        Ok(data.as_array().cloned().unwrap_or_default())
    }

    /// Every metric name stored.
    pub fn metric_names(&self) -> Result<Vec<String>, String> {
        let r = try_request(self.port, "GET", "/api/v1/label/__name__/values", &[], b"")
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
        Ok(v["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Waits until `expr` returns something, up to `timeout`.
    pub fn wait_for(&self, expr: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.query(expr).is_ok_and(|r| !r.is_empty()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn result_list(data: &Value) -> Vec<Value> {
    match data["resultType"].as_str() {
        Some("scalar") | Some("string") => vec![data["result"].clone()],
        _ => data["result"].as_array().cloned().unwrap_or_default(),
    }
}

/// The sample values of a query result (instant or range), as floats
/// (Prometheus sends them as strings: "NaN", "+Inf", "0.5").
pub fn sample_values(result: &[Value]) -> Vec<f64> {
    let mut out = Vec::new();
    let parse = |p: &Value| {
        p.get(1)
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
    };
    for r in result {
        if let Some(v) = r.get("value").and_then(parse) {
            out.push(v);
        }
        if let Some(vs) = r.get("values").and_then(Value::as_array) {
            out.extend(vs.iter().filter_map(parse));
        }
        // A scalar: [time, "value"].
        if let Some(v) = parse(r) {
            out.push(v);
        }
    }
    out
}

/// `application/x-www-form-urlencoded` encoding of one key or value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The PromQL we ship.

/// One expression, with where it comes from (for failure messages) and
/// how to show it (dashboard panels).
#[derive(Debug, Clone)]
pub struct Shipped {
    /// e.g. `kong-dp.json: panel 12 "Request rate" A`.
    pub origin: String,
    /// As written in the file.
    pub raw: String,
    /// Made concrete (variables and placeholders replaced).
    pub expr: String,
}

/// A dashboard panel and its queries.
#[derive(Debug, Clone)]
pub struct Panel {
    pub id: u64,
    pub title: String,
    pub kind: String,
    pub unit: String,
    /// (legend format, query).
    pub targets: Vec<(String, Shipped)>,
}

/// The dashboards the chart ships.
pub fn dashboard_files() -> Vec<PathBuf> {
    let dir = repo_root().join("helm/kong-dp/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// Grafana's built-in interval variables with concrete values for a 1 s
/// scrape interval; dashboard variables (all `includeAll` with
/// `allValue: ".*"`, used only in `=~` matchers) become `.*`.
pub fn grafana_substitute(expr: &str, variables: &[String]) -> String {
    let mut values: Vec<(String, String)> = vec![
        ("__rate_interval".into(), RATE_INTERVAL.into()),
        ("__interval_ms".into(), "1000".into()),
        ("__interval".into(), SCRAPE_INTERVAL.into()),
        ("__range_s".into(), "300".into()),
        ("__range_ms".into(), "300000".into()),
        ("__range".into(), "5m".into()),
    ];
    values.extend(variables.iter().map(|v| (v.clone(), ".*".to_string())));
    // Longest names first so `$__interval` never eats `$__interval_ms`.
    values.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    let mut out = expr.to_string();
    for (name, value) in &values {
        out = out.replace(&format!("${{{name}}}"), value);
        out = out.replace(&format!("[[{name}]]"), value);
        // `$name` not followed by a word character.
        let needle = format!("${name}");
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(i) = rest.find(&needle) {
            let after = &rest[i + needle.len()..];
            result.push_str(&rest[..i]);
            if after
                .chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
            {
                result.push_str(&needle);
            } else {
                result.push_str(value);
            }
            rest = after;
        }
        result.push_str(rest);
        out = result;
    }
    out
}

/// Panels (rows' nested panels included) of one dashboard file, with their
/// expressions made concrete. Panic on a malformed file: the dashboard
/// test (`helm/tests/test_dashboard.py`) reports those in detail.
pub fn dashboard_panels(file: &Path) -> Vec<Panel> {
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let dash: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let variables = variable_names(&dash);
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut flat = Vec::new();
    for p in dash["panels"].as_array().into_iter().flatten() {
        flat.push(p.clone());
        flat.extend(p["panels"].as_array().cloned().unwrap_or_default());
    }
    flat.iter()
        .filter(|p| p["type"] != "row")
        .map(|p| {
            let id = p["id"].as_u64().unwrap_or(0);
            let title = p["title"].as_str().unwrap_or("").to_string();
            let targets = p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let raw = t["expr"].as_str().unwrap_or("").to_string();
                    let shipped = Shipped {
                        origin: format!(
                            "{name}: panel {id} {title:?} {}",
                            t["refId"].as_str().unwrap_or("?")
                        ),
                        expr: grafana_substitute(&raw, &variables),
                        raw,
                    };
                    (
                        t["legendFormat"].as_str().unwrap_or("").to_string(),
                        shipped,
                    )
                })
                .collect();
            Panel {
                id,
                title,
                kind: p["type"].as_str().unwrap_or("").to_string(),
                unit: p["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                targets,
            }
        })
        .collect()
}

/// The names of a dashboard's template variables.
fn variable_names(dash: &Value) -> Vec<String> {
    dash["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect()
}

/// Every target expression of every shipped dashboard.
pub fn dashboard_queries() -> Vec<Shipped> {
    dashboard_files()
        .iter()
        .flat_map(|f| dashboard_panels(f))
        .flat_map(|p| p.targets.into_iter().map(|(_, s)| s))
        .collect()
}

/// The `label_values(<selector>, <label>)` queries of the dashboards'
/// template variables: (origin, selector made concrete, label).
pub fn dashboard_variable_queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for file in dashboard_files() {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let dash: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let names = variable_names(&dash);
        for v in dash["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] != "query" {
                continue;
            }
            let q = v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .unwrap_or("");
            let Some(inner) = q
                .trim()
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
            else {
                panic!(
                    "variable {}: only label_values(...) is supported: {q}",
                    v["name"]
                );
            };
            let (selector, label) = inner.rsplit_once(',').unwrap_or(("", inner));
            out.push((
                format!("variable {}", v["name"].as_str().unwrap_or("?")),
                grafana_substitute(selector.trim(), &names),
                label.trim().to_string(),
            ));
        }
    }
    out
}

/// A prometheus-adapter rule, as `helm/examples/prometheus-adapter/rules.yaml`
/// declares it.
#[derive(Debug, Clone)]
pub struct AdapterRule {
    pub series_query: String,
    /// `name.matches` (an anchored literal such as `^kong_http_requests_total$`).
    pub matches: String,
    /// `name.as`: the custom metric an HPA asks for.
    pub name_as: String,
    pub metrics_query: String,
}

pub fn adapter_rules_file() -> PathBuf {
    repo_root().join("helm/examples/prometheus-adapter/rules.yaml")
}

/// The custom rules of the adapter values file.
pub fn adapter_rules() -> Vec<AdapterRule> {
    let file = adapter_rules_file();
    let text =
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let s = |v: &serde_yaml::Value| v.as_str().unwrap_or("").to_string();
    doc["rules"]["custom"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|r| AdapterRule {
            series_query: s(&r["seriesQuery"]),
            matches: s(&r["name"]["matches"]),
            name_as: s(&r["name"]["as"]),
            metrics_query: s(&r["metricsQuery"]),
        })
        .collect()
}

/// The metric name `matches` selects: only the anchored-literal form is
/// supported (this crate has no regex engine); anything else panics so
/// that the test gets extended rather than silently skipping a rule.
pub fn adapter_series_name(matches: &str) -> String {
    let lit = matches
        .strip_prefix('^')
        .and_then(|m| m.strip_suffix('$'))
        .unwrap_or(matches);
    assert!(
        !lit.is_empty()
            && lit
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "adapter rule name.matches {matches:?} is not an anchored metric name; extend \
         tests/src/prometheus.rs to expand it"
    );
    lit.to_string()
}

/// Expands a `metricsQuery` template as prometheus-adapter does for a pods
/// query in one namespace: `<<.Series>>` is the series name,
/// `<<.LabelMatchers>>` the namespace matcher and the pod list (a regex
/// alternation), `<<.GroupBy>>` the group resource's label.
pub fn expand_adapter(template: &str, series: &str) -> String {
    template
        .replace("<<.Series>>", series)
        .replace(
            "<<.LabelMatchers>>",
            &format!("namespace=\"{NAMESPACE}\",pod=~\"{POD}\""),
        )
        .replace("<<.GroupBy>>", "pod")
}

/// YAML files under `helm/examples` (recursively) and the chart's values:
/// where PromQL could be shipped besides the dashboards.
fn yaml_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo_root().join("helm/examples"), &mut out);
    out.push(repo_root().join("helm/kong-dp/values.yaml"));
    out.sort();
    out
}

/// The documents of a YAML file (split on `---` lines).
fn yaml_docs(file: &Path) -> Vec<serde_yaml::Value> {
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(d) = docs.last_mut() {
            d.push_str(line);
            d.push('\n');
        }
    }
    docs.iter()
        .map(|d| serde_yaml::from_str(d).unwrap_or_else(|e| panic!("{}: {e}", file.display())))
        .collect()
}

fn walk_yaml(v: &serde_yaml::Value, path: &str, f: &mut dyn FnMut(&str, &str, &serde_yaml::Value)) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, child) in m {
                let k = k.as_str().unwrap_or("?");
                f(path, k, child);
                walk_yaml(child, &format!("{path}.{k}"), f);
            }
        }
        serde_yaml::Value::Sequence(s) => {
            for (i, child) in s.iter().enumerate() {
                walk_yaml(child, &format!("{path}[{i}]"), f);
            }
        }
        _ => {}
    }
}

/// Keys whose string value is PromQL (alert/recording rules, KEDA's
/// prometheus trigger, prometheus-adapter's `metricsQuery`). The adapter
/// rules file is covered by [`adapter_rules`] with its templates expanded.
const PROMQL_KEYS: [&str; 3] = ["expr", "query", "metricsQuery"];

/// PromQL under an `expr`/`query` key in the examples and the chart's
/// values (the adapter rules file excepted).
pub fn example_queries() -> Vec<Shipped> {
    let adapter = adapter_rules_file();
    let root = repo_root();
    let mut out = Vec::new();
    for file in yaml_files().into_iter().filter(|f| *f != adapter) {
        let rel = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for doc in yaml_docs(&file) {
            walk_yaml(&doc, "", &mut |path, key, v| {
                if let (true, Some(s)) = (PROMQL_KEYS.contains(&key), v.as_str()) {
                    out.push(Shipped {
                        origin: format!("{rel}: {path}.{key}"),
                        raw: s.to_string(),
                        expr: s.to_string(),
                    });
                }
            });
        }
    }
    out
}

/// Metric names HPAs in the examples ask the custom metrics API for
/// (`type: Pods` / `Object` metrics): (file, name).
pub fn hpa_pod_metric_names() -> Vec<(String, String)> {
    let root = repo_root();
    let mut out = Vec::new();
    for file in yaml_files() {
        let rel = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for doc in yaml_docs(&file) {
            walk_yaml(&doc, "", &mut |_, key, v| {
                let kind = match key {
                    "pods" | "object" => key,
                    _ => return,
                };
                if let Some(name) = v["metric"]["name"].as_str() {
                    out.push((format!("{rel} ({kind})"), name.to_string()));
                }
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------
// A CPU quota and memory limit for one process.

/// Why a [`CgroupJail`] could not be made.
#[derive(Debug)]
pub enum JailError {
    /// No cgroup v1 `cpu` and `memory` hierarchies (a cgroup-v2-only host,
    /// or a kernel without CFS bandwidth control).
    Impossible(String),
    /// They exist but cannot be written (not root, read-only mount).
    Denied(String),
}

/// Child groups, in the cgroup v1 `cpu`, `cpuacct` and `memory`
/// hierarchies, of the groups this test process sits in, with a CPU quota
/// and a memory limit. Only a process started through [`CgroupJail::wrapper`]
/// joins them; dropping the jail removes them (after that process is gone).
pub struct CgroupJail {
    dirs: Vec<PathBuf>,
}

fn v1_mount(mountinfo: &str, controller: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut after = after.split_whitespace();
        let (fs_type, _source, opts) = (after.next()?, after.next()?, after.next()?);
        let mount_point = before.split_whitespace().nth(4)?;
        (fs_type == "cgroup" && opts.split(',').any(|o| o == controller))
            .then(|| PathBuf::from(mount_point.replace("\\040", " ")))
    })
}

/// This process's group in the v1 hierarchy carrying `controller`.
fn own_group(proc_cgroup: &str, controller: &str) -> Option<String> {
    proc_cgroup.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })
}

impl CgroupJail {
    /// `cpu_quota_cores` as `cfs_quota_us` over a 100 ms period, and a
    /// memory limit of `memory_limit_bytes`.
    pub fn new(
        tag: &str,
        cpu_quota_cores: f64,
        memory_limit_bytes: u64,
    ) -> Result<Self, JailError> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        // Unique per jail: tests of one binary run in parallel.
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut jail = CgroupJail { dirs: Vec::new() };
        for controller in ["cpu", "cpuacct", "memory"] {
            let Some(mount) = v1_mount(&mountinfo, controller) else {
                if controller == "cpuacct" {
                    continue; // usage then comes from wherever the gateway finds it
                }
                return Err(JailError::Impossible(format!(
                    "no cgroup v1 hierarchy with the {controller} controller is mounted"
                )));
            };
            // Several controllers may share one hierarchy (cpu,cpuacct).
            let group = own_group(&own, controller).unwrap_or_else(|| "/".into());
            let dir = mount
                .join(group.trim_start_matches('/'))
                .join(format!("gw-{tag}-{}-{seq}", std::process::id()));
            if jail.dirs.contains(&dir) {
                continue;
            }
            if let Err(e) = std::fs::create_dir(&dir) {
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(JailError::Denied(format!("create {}: {e}", dir.display())));
                }
            }
            jail.dirs.push(dir.clone());
            let write = |file: &str, value: String| {
                std::fs::write(dir.join(file), &value).map_err(|e| {
                    JailError::Denied(format!(
                        "write {value} to {}: {e}",
                        dir.join(file).display()
                    ))
                })
            };
            match controller {
                "cpu" => {
                    if !dir.join("cpu.cfs_quota_us").exists() {
                        return Err(JailError::Impossible(format!(
                            "{} has no cpu.cfs_quota_us (no CFS bandwidth control)",
                            dir.display()
                        )));
                    }
                    write("cpu.cfs_period_us", "100000".into())?;
                    write(
                        "cpu.cfs_quota_us",
                        format!("{}", (cpu_quota_cores * 100_000.0).round() as u64),
                    )?;
                }
                "memory" => write("memory.limit_in_bytes", memory_limit_bytes.to_string())?,
                _ => {}
            }
        }
        Ok(jail)
    }

    /// A command prefix that moves the shell into every group, then
    /// `exec`s the real program (its PID stays the one joined).
    pub fn wrapper(&self) -> Vec<String> {
        let joins: Vec<String> = self
            .dirs
            .iter()
            .map(|d| format!("echo $$ > '{}'", d.join("cgroup.procs").display()))
            .collect();
        vec![
            "sh".into(),
            "-c".into(),
            format!("{} && exec \"$0\" \"$@\"", joins.join(" && ")),
        ]
    }
}

impl Drop for CgroupJail {
    fn drop(&mut self) {
        // rmdir fails while a member is still exiting: retry for a while.
        for dir in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grafana_variables_become_concrete() {
        let vars = vec!["instance".to_string(), "service".to_string()];
        assert_eq!(
            grafana_substitute(
                r#"sum(rate(m{instance=~"$instance",service=~"${service}"}[$__rate_interval])) + x[$__interval] + y[$__interval_ms]"#,
                &vars
            ),
            r#"sum(rate(m{instance=~".*",service=~".*"}[5s])) + x[1s] + y[1000]"#
        );
        // label_replace's `${1}` is not a dashboard variable: kept.
        assert_eq!(
            grafana_substitute(r#""${1}xx" $instances"#, &vars),
            r#""${1}xx" $instances"#
        );
    }

    #[test]
    fn adapter_templates_expand_like_prometheus_adapter() {
        assert_eq!(
            expand_adapter(
                "sum(rate(<<.Series>>{<<.LabelMatchers>>}[2m])) by (<<.GroupBy>>)",
                "kong_http_requests_total"
            ),
            r#"sum(rate(kong_http_requests_total{namespace="kong",pod=~"kong-dp-0"}[2m])) by (pod)"#
        );
        assert_eq!(adapter_series_name("^kong_x_total$"), "kong_x_total");
    }

    #[test]
    fn form_encoding() {
        assert_eq!(
            form_encode(r#"a{b="c"} [5s]&"#),
            "a%7Bb%3D%22c%22%7D+%5B5s%5D%26"
        );
    }

    #[test]
    fn own_cgroup_lines() {
        let pc = "4:memory:/a/b\n2:cpu,cpuacct:/x\n0::/\n";
        assert_eq!(own_group(pc, "memory").as_deref(), Some("/a/b"));
        assert_eq!(own_group(pc, "cpuacct").as_deref(), Some("/x"));
        assert_eq!(own_group(pc, "pids"), None);
    }
}
