use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_ok(conf: Option<&str>, pairs: &[(&str, &str)]) -> Settings {
    match Settings::load(conf, env(pairs)) {
        Ok(s) => s,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn load_err(conf: Option<&str>, pairs: &[(&str, &str)]) -> SettingsError {
    match Settings::load(conf, env(pairs)) {
        Ok(s) => panic!("expected an error, got {s:?}"),
        Err(e) => e,
    }
}

const DP_CERTS: [(&str, &str); 2] = [
    ("KONG_CLUSTER_CERT", "/etc/kong/cluster.crt"),
    ("KONG_CLUSTER_CERT_KEY", "/etc/kong/cluster.key"),
];

#[test]
fn defaults_match_kong() {
    let s = load_ok(None, &[]);
    assert_eq!(s.role, Role::Traditional);
    assert_eq!(s.database, "off");
    assert_eq!(s.declarative_config, None);
    assert_eq!(s.prefix, PathBuf::from("/usr/local/kong"));
    assert_eq!(s.redacted()["prefix"], json!("/usr/local/kong"));
    assert_eq!(s.log_level, LogLevel::Notice);
    assert_eq!(
        s.proxy_access_log_path(),
        Some(PathBuf::from("/usr/local/kong/logs/access.log"))
    );
    assert_eq!(
        s.proxy_error_log_path(),
        Some(PathBuf::from("/usr/local/kong/logs/error.log"))
    );

    // Kong's default: plain 8000 and TLS 8443 (http2 flag: ALPN h2).
    assert_eq!(s.proxy_listen.len(), 2);
    assert_eq!(
        s.proxy_listen[0].socket_addr(),
        Some("0.0.0.0:8000".parse().expect("addr"))
    );
    assert!(s.proxy_listen[0].reuseport && !s.proxy_listen[0].ssl);
    assert!(s.proxy_listen[1].ssl && s.proxy_listen[1].http2);
    assert_eq!(s.proxy_listen[1].port, 8443);
    assert_eq!(s.ssl.cipher_suite, CipherSuite::Intermediate);
    assert_eq!(
        s.ssl.protocols,
        vec![TlsProtocol::TlsV1_2, TlsProtocol::TlsV1_3]
    );
    assert!(s.ssl.session_tickets && !s.ssl.prefer_server_ciphers);
    assert!(s.ssl.cert.is_empty() && s.ssl.cert_key.is_empty());
    assert_eq!(s.ssl.session_cache_size, 10 * 1024 * 1024);
    assert_eq!(s.status_listen.len(), 1);
    assert_eq!(
        s.status_listen[0].socket_addr(),
        Some("127.0.0.1:8007".parse().expect("addr"))
    );
    assert_eq!(s.status_listen[0].backlog, Some(16384));
    // No Admin API: off by default.
    assert!(s.admin_listen.is_empty());

    assert_eq!(s.nginx_worker_processes, WorkerProcesses::Auto);
    assert!(s.trusted_ips.is_empty() && !s.trusted_ips_unix);
    assert_eq!(s.real_ip_header, "X-Real-IP");
    assert!(!s.real_ip_recursive);
    assert_eq!(
        s.headers,
        HeadersConfig {
            server: true,
            via: true,
            proxy_latency: true,
            response_latency: true,
            admin_latency: true,
            upstream_latency: true,
            upstream_status: false,
            request_id: true,
        }
    );
    assert!(s.headers_upstream_request_id);
    assert_eq!(s.error_default_type, ErrorDefaultType::TextPlain);
    assert!(!s.allow_debug_header);
    assert_eq!(s.nginx_http_client_max_body_size, None);
    assert_eq!(s.mem_cache_size, 128 * 1024 * 1024);
    assert_eq!(s.nginx_http_client_header_buffer_size, 1024);
    assert_eq!(
        s.nginx_http_large_client_header_buffers,
        LargeHeaderBuffers {
            number: 4,
            size: 8192
        }
    );
    assert!(s.port_maps.is_empty());
    assert_eq!(s.cluster_control_plane.authority(), "127.0.0.1:8005");
    assert_eq!(s.cluster_mtls, ClusterMtls::Shared);
    assert_eq!(s.lua_ssl_trusted_certificate, vec!["system"]);
    assert_eq!(s.cluster_max_payload, 16_777_216);
    assert!(!s.konnect_mode);
    assert_eq!(s.cluster_telemetry_endpoint, None);
    assert_eq!(s.plugins, vec!["bundled"]);
    assert_eq!(s.upstream_keepalive_pool_size, 512);
    assert_eq!(s.upstream_keepalive_max_requests, 10_000);
    assert_eq!(s.upstream_keepalive_idle_timeout, 60);
    assert!(s.warnings.is_empty());
}

#[test]
fn precedence_env_over_file_over_default() {
    let conf =
        "log_level = info\nproxy_listen = 127.0.0.1:9000\nerror_default_type = application/json\n";
    let s = load_ok(Some(conf), &[("KONG_LOG_LEVEL", "debug")]);
    assert_eq!(s.log_level, LogLevel::Debug); // env beats file
    assert_eq!(s.proxy_listen.len(), 1); // file beats default
    assert_eq!(s.proxy_listen[0].port, 9000);
    assert_eq!(s.error_default_type, ErrorDefaultType::ApplicationJson);
    assert_eq!(s.upstream_keepalive_pool_size, 512); // default
}

#[test]
fn unknown_keys() {
    let conf = "pg_host = db.local\nlog_level = warn\nnot a kv line\n";
    let s = load_ok(
        Some(conf),
        &[
            ("KONG_PG_PASSWORD", "secret"),
            ("KONG_SOMETHING_ELSE", "x"),
            ("HOME", "/root"),
        ],
    );
    assert_eq!(s.log_level, LogLevel::Warn);
    assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
    assert!(s.warnings[0].contains("line 3"), "{:?}", s.warnings);
    assert!(s.warnings.iter().any(|w| w.contains("'pg_host'")));
    assert!(!s.warnings.iter().any(|w| w.contains("PG_PASSWORD")));
}

#[test]
fn bad_values_name_the_key_and_all_errors_are_collected() {
    let conf = "proxy_listen = nonsense\nlog_level = loud\n";
    let err = load_err(
        Some(conf),
        &[
            ("KONG_STATUS_LISTEN", "127.0.0.1"),
            ("KONG_TRUSTED_IPS", "10.0.0.0/8, bogus"),
            ("KONG_HEADERS", "Server, X-Nope"),
        ],
    );
    let keys: Vec<&str> = err.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "log_level",
            "proxy_listen",
            "KONG_STATUS_LISTEN",
            "KONG_TRUSTED_IPS",
            "KONG_HEADERS"
        ]
    );
    assert!(err.errors[1]
        .reason
        .starts_with("proxy_listen must be of form: [off] | <ip>:<port> [ssl]"));
    assert_eq!(err.errors[1].origin, ValueSource::ConfFile { line: 1 });
    assert_eq!(err.errors[2].origin, ValueSource::Env);
    assert!(err.errors[3].reason.ends_with("got 'bogus'"));
    assert_eq!(err.errors[4].reason, "headers: invalid entry 'X-Nope'");
    let text = err.to_string();
    assert!(
        text.contains("KONG_STATUS_LISTEN: status_listen must be of form"),
        "{text}"
    );
}

#[test]
fn listen_off_and_ipv6_via_env() {
    let s = load_ok(
        None,
        &[
            ("KONG_PROXY_LISTEN", "[::]:8000 ipv6only=on, 0.0.0.0:8000"),
            ("KONG_STATUS_LISTEN", "off"),
        ],
    );
    assert_eq!(
        s.proxy_listen[0].socket_addr(),
        Some("[::]:8000".parse().expect("addr"))
    );
    assert_eq!(s.proxy_listen[0].ipv6only, Some(true));
    assert!(s.status_listen.is_empty());
    assert_eq!(s.redacted()["status_listen"], json!(["off"]));
}

#[test]
fn role_and_database() {
    let err = load_err(None, &[("KONG_ROLE", "control_plane")]);
    assert_eq!(err.errors.len(), 1);
    assert_eq!(err.errors[0].key, "KONG_ROLE");
    assert_eq!(
        err.errors[0].reason,
        "this gateway is a data plane; role 'control_plane' is not supported"
    );

    let err = load_err(Some("database = postgres"), &[]);
    assert_eq!(err.errors[0].key, "database");
    assert!(
        err.errors[0].reason.contains("database = off"),
        "{}",
        err.errors[0].reason
    );

    let err = load_err(None, &[("KONG_DATABASE", "mysql")]);
    assert_eq!(
        err.errors[0].reason,
        "database has an invalid value: 'mysql' (postgres, cassandra, off)"
    );

    let err = load_err(None, &[("KONG_ROLE", "dataplane")]);
    assert!(err.errors[0]
        .reason
        .starts_with("role has an invalid value: 'dataplane'"));
}

#[test]
fn data_plane_checks() {
    let err = load_err(None, &[("KONG_ROLE", "data_plane")]);
    assert_eq!(err.errors.len(), 1);
    assert_eq!(err.errors[0].key, "KONG_ROLE");
    assert_eq!(
        err.errors[0].reason,
        "cluster certificate and key must be provided to use Hybrid mode"
    );

    let mut e = DP_CERTS.to_vec();
    e.extend([
        ("KONG_ROLE", "data_plane"),
        ("KONG_DATABASE", "postgres"),
        ("KONG_PROXY_LISTEN", "off"),
    ]);
    let err = load_err(None, &e);
    let reasons: Vec<&str> = err.errors.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        vec![
            "only in-memory storage can be used when role = \"data_plane\"\nHint: set database = off in your kong.conf",
            "proxy_listen must be specified when role = \"data_plane\"",
        ]
    );

    let mut e = DP_CERTS.to_vec();
    e.extend([
        ("KONG_ROLE", "data_plane"),
        ("KONG_CLUSTER_CONTROL_PLANE", "abc.cp0.konghq.com:443"),
        ("KONG_CLUSTER_SERVER_NAME", "abc.cp0.konghq.com"),
        ("KONG_CLUSTER_MTLS", "pki"),
        ("KONG_CLUSTER_DP_LABELS", "deployment:prod,region:eu"),
        ("KONG_KONNECT_MODE", "on"),
        ("KONG_CLUSTER_TELEMETRY_ENDPOINT", "abc.tp0.konghq.com:443"),
        (
            "KONG_LUA_SSL_TRUSTED_CERTIFICATE",
            "system, /etc/ssl/extra.pem",
        ),
    ]);
    let s = load_ok(None, &e);
    assert_eq!(s.role, Role::DataPlane);
    assert_eq!(s.cluster_control_plane.host, "abc.cp0.konghq.com");
    assert_eq!(s.cluster_server_name.as_deref(), Some("abc.cp0.konghq.com"));
    assert_eq!(s.cluster_mtls, ClusterMtls::Pki);
    assert_eq!(s.cluster_dp_labels.len(), 2);
    assert!(s.konnect_mode);
    assert_eq!(
        s.cluster_telemetry_endpoint.as_ref().map(|h| h.port),
        Some(443)
    );
    assert_eq!(
        s.lua_ssl_trusted_certificate,
        vec!["system", "/etc/ssl/extra.pem"]
    );
}

#[test]
fn labels_require_data_plane() {
    let err = load_err(Some("cluster_dp_labels = a:b"), &[]);
    assert_eq!(err.errors[0].key, "cluster_dp_labels");
    assert_eq!(
        err.errors[0].reason,
        "cluster_dp_labels can only be used when role = \"data_plane\""
    );
}

#[test]
fn worker_processes_alias() {
    let s = load_ok(None, &[("KONG_NGINX_WORKER_PROCESSES", "4")]);
    assert_eq!(s.nginx_worker_processes, WorkerProcesses::Count(4));
    let s = load_ok(None, &[("KONG_NGINX_MAIN_WORKER_PROCESSES", "2")]);
    assert_eq!(s.nginx_worker_processes, WorkerProcesses::Count(2));
    // Kong's alias rule: the nginx_main_ form wins whichever source set it.
    let s = load_ok(
        Some("nginx_main_worker_processes = 3"),
        &[("KONG_NGINX_WORKER_PROCESSES", "4")],
    );
    assert_eq!(s.nginx_worker_processes, WorkerProcesses::Count(3));
    let err = load_err(None, &[("KONG_NGINX_MAIN_WORKER_PROCESSES", "0")]);
    assert_eq!(err.errors[0].key, "KONG_NGINX_MAIN_WORKER_PROCESSES");
    assert!(err.errors[0]
        .reason
        .starts_with("nginx_main_worker_processes"));
}

#[test]
fn real_ip_settings() {
    let s = load_ok(
        Some("real_ip_header = X-Forwarded-For\nreal_ip_recursive = on\ntrusted_ips = 0.0.0.0/0,::/0,unix:"),
        &[],
    );
    assert_eq!(s.real_ip_header, "X-Forwarded-For");
    assert!(s.real_ip_recursive);
    assert_eq!(s.trusted_ips.len(), 2);
    assert!(s.trusted_ips_unix);
    // Kong's prefix_handler spec "enables proxy_protocol": the alias wins.
    let s = load_ok(
        Some("real_ip_header = X-Forwarded-For"),
        &[
            ("KONG_NGINX_PROXY_REAL_IP_HEADER", "proxy_protocol"),
            ("KONG_PROXY_LISTEN", "0.0.0.0:9000 proxy_protocol"),
        ],
    );
    assert_eq!(s.real_ip_header, "proxy_protocol");
    assert!(s.proxy_listen[0].proxy_protocol);
    let err = load_err(None, &[("KONG_REAL_IP_RECURSIVE", "maybe")]);
    assert_eq!(err.errors[0].key, "KONG_REAL_IP_RECURSIVE");
}

#[test]
fn sizes_numbers_and_misc() {
    let s = load_ok(
        None,
        &[
            ("KONG_NGINX_HTTP_CLIENT_MAX_BODY_SIZE", "10m"),
            ("KONG_NGINX_HTTP_CLIENT_HEADER_BUFFER_SIZE", "2k"),
            ("KONG_NGINX_HTTP_LARGE_CLIENT_HEADER_BUFFERS", "8 16k"),
            ("KONG_PORT_MAPS", "80:8000, 443:8443"),
            ("KONG_UPSTREAM_KEEPALIVE_POOL_SIZE", "0"),
            ("KONG_ALLOW_DEBUG_HEADER", "on"),
            ("KONG_HEADERS", "off"),
            ("KONG_HEADERS_UPSTREAM", "off"),
            ("KONG_PLUGINS", "bundled, my-plugin, off"),
            ("KONG_PROXY_ACCESS_LOG", "/dev/stdout"),
            ("KONG_PROXY_ERROR_LOG", "off"),
            ("KONG_PREFIX", "/tmp/kong"),
            ("KONG_DECLARATIVE_CONFIG", "/etc/kong/kong.yml"),
            ("KONG_MEM_CACHE_SIZE", "64m"),
        ],
    );
    assert_eq!(s.mem_cache_size, 64 * 1024 * 1024);
    assert_eq!(s.nginx_http_client_max_body_size, Some(10 * 1024 * 1024));
    assert_eq!(s.nginx_http_client_header_buffer_size, 2048);
    assert_eq!(
        s.nginx_http_large_client_header_buffers,
        LargeHeaderBuffers {
            number: 8,
            size: 16384
        }
    );
    assert_eq!(s.port_maps, vec![(80, 8000), (443, 8443)]);
    assert_eq!(s.upstream_keepalive_pool_size, 0);
    assert!(s.allow_debug_header);
    assert_eq!(s.headers, HeadersConfig::default());
    assert!(!s.headers_upstream_request_id);
    assert_eq!(s.plugins, vec!["bundled", "my-plugin"]);
    assert_eq!(
        s.proxy_access_log_path(),
        Some(PathBuf::from("/dev/stdout"))
    );
    assert_eq!(s.proxy_error_log_path(), None);
    assert_eq!(
        s.declarative_config,
        Some(PathBuf::from("/etc/kong/kong.yml"))
    );

    let s = load_ok(None, &[("KONG_PLUGINS", "off")]);
    assert!(s.plugins.is_empty());

    let err = load_err(
        None,
        &[
            ("KONG_NGINX_HTTP_CLIENT_MAX_BODY_SIZE", "10mb"),
            ("KONG_UPSTREAM_KEEPALIVE_MAX_REQUESTS", "-5"),
            ("KONG_CLUSTER_MAX_PAYLOAD", "1024"),
            ("KONG_PORT_MAPS", "80"),
            ("KONG_ALLOW_DEBUG_HEADER", "yes"),
        ],
    );
    let got: Vec<(&str, &str)> = err
        .errors
        .iter()
        .map(|e| (e.key.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got.contains(&(
        "KONG_UPSTREAM_KEEPALIVE_MAX_REQUESTS",
        "upstream_keepalive_max_requests must be 0 or greater"
    )));
    assert!(got.contains(&(
        "KONG_CLUSTER_MAX_PAYLOAD",
        "cluster_max_payload must be 4194304 (4MB) or greater"
    )));
    assert!(got.contains(&("KONG_PORT_MAPS", "invalid port mapping (`port_maps`): 80")));
}

#[test]
fn empty_env_value_unsets_optional() {
    let s = load_ok(
        Some("declarative_config = /a.yml"),
        &[("KONG_DECLARATIVE_CONFIG", "")],
    );
    assert_eq!(s.declarative_config, None);
    let err = load_err(None, &[("KONG_PROXY_LISTEN", "")]);
    assert_eq!(err.errors[0].key, "KONG_PROXY_LISTEN");
}

#[test]
fn redacted_hides_secrets() {
    let mut e = DP_CERTS.to_vec();
    e.extend([
        ("KONG_ROLE", "data_plane"),
        (
            "KONG_DECLARATIVE_CONFIG_STRING",
            "{\"_format_version\":\"3.0\"}",
        ),
    ]);
    let s = load_ok(None, &e);
    let v = s.redacted();
    assert_eq!(v["cluster_cert_key"], json!("******"));
    assert_eq!(v["declarative_config_string"], json!("******"));
    assert_eq!(v["cluster_cert"], json!("/etc/kong/cluster.crt"));
    assert_eq!(v["role"], json!("data_plane"));
    assert_eq!(v["cluster_ca_cert"], Value::Null);
    assert_eq!(v["plugins"], json!(["bundled"]));
    assert_eq!(
        v["proxy_listen"],
        json!([
            "0.0.0.0:8000 reuseport backlog=16384",
            "0.0.0.0:8443 http2 ssl reuseport backlog=16384"
        ])
    );
    assert_eq!(v["admin_listen"], json!(["off"]));
    let text = v.to_string();
    assert!(
        !text.contains("cluster.key") && !text.contains("_format_version"),
        "{text}"
    );
}

#[test]
fn client_timeouts_and_underscores() {
    use std::time::Duration;
    let s = load_ok(None, &[]);
    assert_eq!(s.client_header_timeout, Duration::from_secs(60));
    assert_eq!(s.client_body_timeout, Duration::from_secs(60));
    assert!(s.underscores_in_headers, "Kong's template has it on");
    let s = load_ok(
        Some("nginx_http_client_body_timeout = 5s"),
        &[
            ("KONG_NGINX_HTTP_CLIENT_HEADER_TIMEOUT", "2s"),
            ("KONG_NGINX_PROXY_CLIENT_BODY_TIMEOUT", "1500ms"),
            ("KONG_NGINX_PROXY_UNDERSCORES_IN_HEADERS", "off"),
        ],
    );
    assert_eq!(s.client_header_timeout, Duration::from_secs(2));
    // The proxy-block form wins, as nginx's server block over http.
    assert_eq!(s.client_body_timeout, Duration::from_millis(1500));
    assert!(!s.underscores_in_headers);
    let err = load_err(None, &[("KONG_NGINX_HTTP_CLIENT_HEADER_TIMEOUT", "fast")]);
    assert_eq!(err.errors[0].key, "KONG_NGINX_HTTP_CLIENT_HEADER_TIMEOUT");
}

#[test]
fn http2_and_keepalive_limits() {
    use std::time::Duration;
    // nginx's HTTP/2 defaults, Kong's keepalive_requests.
    let s = load_ok(None, &[]);
    assert_eq!(s.http2_max_concurrent_streams, 128);
    assert_eq!(s.http2_body_preread_size, 64 * 1024);
    assert_eq!(s.keepalive_requests, 10_000);
    assert_eq!(s.send_timeout, Duration::from_secs(60));
    let s = load_ok(
        Some("nginx_http_http2_max_concurrent_streams = 64"),
        &[
            ("KONG_NGINX_PROXY_HTTP2_MAX_CONCURRENT_STREAMS", "16"),
            ("KONG_NGINX_HTTP_HTTP2_BODY_PREREAD_SIZE", "1m"),
            ("KONG_NGINX_HTTP_KEEPALIVE_REQUESTS", "100"),
            ("KONG_NGINX_PROXY_SEND_TIMEOUT", "5s"),
        ],
    );
    // The proxy-block form wins.
    assert_eq!(s.http2_max_concurrent_streams, 16);
    assert_eq!(s.http2_body_preread_size, 1024 * 1024);
    assert_eq!(s.keepalive_requests, 100);
    assert_eq!(s.send_timeout, Duration::from_secs(5));
    for (k, v, why) in [
        (
            "KONG_NGINX_HTTP_HTTP2_MAX_CONCURRENT_STREAMS",
            "0",
            "between 1 and",
        ),
        (
            "KONG_NGINX_HTTP_HTTP2_BODY_PREREAD_SIZE",
            "4g",
            "between 0 and 2147483647",
        ),
        ("KONG_NGINX_HTTP_KEEPALIVE_REQUESTS", "0", "between 1 and"),
        ("KONG_NGINX_HTTP_SEND_TIMEOUT", "soon", ""),
    ] {
        let err = load_err(None, &[(k, v)]);
        assert_eq!(err.errors[0].key, k);
        assert!(
            err.errors[0].reason.contains(why),
            "{}",
            err.errors[0].reason
        );
    }
}

#[test]
fn unserved_listen_flags_and_admin_listen_are_refused() {
    // The flags Kong accepts but this gateway does not serve stop the start,
    // naming the setting, the entry and the flag.
    let err = load_err(
        Some("status_listen = 127.0.0.1:8100 ssl"),
        &[
            (
                "KONG_PROXY_LISTEN",
                "0.0.0.0:8000 reuseport http2 deferred, 0.0.0.0:8443 http2 ssl",
            ),
            ("KONG_ADMIN_LISTEN", "127.0.0.1:8444 http2 ssl"),
        ],
    );
    let got: Vec<(&str, &str)> = err
        .errors
        .iter()
        .map(|e| (e.key.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "KONG_PROXY_LISTEN",
                "proxy_listen entry '0.0.0.0:8000 reuseport http2 deferred': 'deferred' (deferred accept (TCP_DEFER_ACCEPT)) \
                 not supported yet; this gateway serves HTTP/1.1 and HTTP/2 listeners, with ssl and proxy_protocol, \
                 remove it from the entry"
            ),
            (
                "status_listen",
                "status_listen entry '127.0.0.1:8100 ssl': 'ssl' (TLS termination) \
                 not supported yet; this listener serves plain HTTP/1.1 only, remove it from the entry"
            ),
            (
                "KONG_ADMIN_LISTEN",
                "admin_listen must be 'off': this gateway has no Admin API (a data plane is configured by its declarative file or its control plane)"
            ),
        ]
    );
    assert!(err
        .to_string()
        .contains("KONG_PROXY_LISTEN: proxy_listen entry '0.0.0.0:8000 reuseport http2 deferred'"));

    let err = load_err(
        None,
        &[("KONG_STATUS_LISTEN", "0.0.0.0:8000 proxy_protocol")],
    );
    assert!(err.errors[0]
        .reason
        .contains("'proxy_protocol' (the PROXY protocol)"));
    let err = load_err(None, &[("KONG_STATUS_LISTEN", "0.0.0.0:8100 http2")]);
    assert!(err.errors[0].reason.contains("'http2' (HTTP/2)"));

    // What is served still loads: plain entries with the socket flags.
    let s = load_ok(
        None,
        &[
            (
                "KONG_PROXY_LISTEN",
                "0.0.0.0:8000 reuseport backlog=16384 bind, [::]:8000 ipv6only=on so_keepalive=off",
            ),
            ("KONG_ADMIN_LISTEN", "off"),
        ],
    );
    assert_eq!(s.proxy_listen.len(), 2);
}

#[test]
fn sensitive_settings_are_known_by_kong_name_and_by_kind() {
    for k in [
        "cluster_cert_key",
        "KONG_CLUSTER_CERT_KEY",
        "declarative_config_string",
        "pg_password",
        "proxy_server",
        "status_ssl_cert_key",
        "some_future_api_token",
        "vault_secret_id",
    ] {
        assert!(is_sensitive(k), "{k}");
    }
    for k in [
        "cluster_cert",
        "cluster_ca_cert",
        "prefix",
        "upstream_keepalive_pool_size",
    ] {
        assert!(!is_sensitive(k), "{k}");
    }
}

#[test]
fn loader_errors_never_show_a_sensitive_value() {
    let value =
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----";
    for (conf, env_pairs) in [
        (None, vec![("KONG_CLUSTER_CERT_KEY", value)]),
        (
            Some(format!("cluster_cert_key = {}", value.replace('\n', " "))),
            vec![],
        ),
    ] {
        let sources = Sources::collect(conf.as_deref(), env(&env_pairs), is_known, &mut Vec::new());
        let mut l = Loader {
            sources,
            errors: Vec::new(),
        };
        // A parser that quotes what it got, whole and in parts, as many do.
        let _: String = l.get("cluster_cert_key", |name, v| {
            let first = v.split_whitespace().nth(2).unwrap_or_default();
            Err(format!("{name}: bad value '{v}' (at '{first}')"))
        });
        let err = SettingsError { errors: l.errors }.to_string();
        assert!(err.contains("cluster_cert_key"), "{err}");
        assert!(!err.contains("MIIEvQIB"), "{err}");
        assert!(!err.contains("PRIVATE"), "{err}");
    }
}

#[test]
fn kong_conf_warnings_do_not_quote_stray_lines() {
    // A key pasted over several lines without `\`: every line after the
    // first is not `key = value`.
    let conf = "cluster_cert_key = -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n= MIIEvQIBADANBgkqhkiG\n";
    let s = load_ok(Some(conf), &[]);
    assert_eq!(s.warnings.len(), 3, "{:?}", s.warnings);
    for w in &s.warnings {
        assert!(!w.contains("MIIE") && !w.contains("PRIVATE"), "{w}");
    }
    assert!(s.warnings[0].contains("line 2"), "{:?}", s.warnings);
}

#[test]
fn router_flavor_other_than_kongs_default_is_refused() {
    let _ = load_ok(None, &[("KONG_ROUTER_FLAVOR", "traditional_compatible")]);
    for v in ["traditional", "expressions"] {
        let err = load_err(None, &[("KONG_ROUTER_FLAVOR", v)]);
        assert_eq!(err.errors[0].key, "KONG_ROUTER_FLAVOR");
        assert!(
            err.errors[0].reason.contains("not supported yet"),
            "{err:?}"
        );
    }
    let err = load_err(None, &[("KONG_ROUTER_FLAVOR", "fast")]);
    assert_eq!(err.errors[0].key, "KONG_ROUTER_FLAVOR");
}

#[test]
fn ssl_settings_follow_kong() {
    // conf_loader_spec "requires both proxy SSL cert and key".
    let err = load_err(None, &[("KONG_SSL_CERT", "/path/cert.pem")]);
    assert_eq!(err.errors[0].reason, "ssl_cert_key must be specified");
    let err = load_err(None, &[("KONG_SSL_CERT_KEY", "/path/key.pem")]);
    assert_eq!(err.errors[0].reason, "ssl_cert must be specified");
    let err = load_err(
        None,
        &[
            ("KONG_SSL_CERT", "a.pem, b.pem"),
            ("KONG_SSL_CERT_KEY", "a.key"),
        ],
    );
    assert_eq!(
        err.errors[0].reason,
        "ssl_cert was specified 2 times while ssl_cert_key was specified 1 times"
    );
    // "does not check SSL cert and key if SSL is off".
    let s = load_ok(
        None,
        &[
            ("KONG_PROXY_LISTEN", "127.0.0.1:123"),
            ("KONG_SSL_CERT", "/path/cert.pem"),
        ],
    );
    assert_eq!(s.ssl.cert, vec!["/path/cert.pem"]);
    // "errors on invalid ssl_cipher_suite".
    let err = load_err(None, &[("KONG_SSL_CIPHER_SUITE", "foo")]);
    assert!(err.errors[0].reason.contains("Undefined cipher suite foo"));
    // A named suite sets the protocols (Kong's parse.lua overrides
    // nginx_http_ssl_protocols), with a warning that ssl_protocols is unused.
    let s = load_ok(None, &[("KONG_SSL_PROTOCOLS", "TLSv1.3")]);
    assert_eq!(
        s.ssl.protocols,
        vec![TlsProtocol::TlsV1_2, TlsProtocol::TlsV1_3]
    );
    assert!(
        s.warnings
            .iter()
            .any(|w| w.starts_with("ssl_protocols is ignored")),
        "{:?}",
        s.warnings
    );
    let s = load_ok(None, &[("KONG_SSL_CIPHER_SUITE", "modern")]);
    assert_eq!(s.ssl.protocols, vec![TlsProtocol::TlsV1_3]);
    assert_eq!(s.ssl.ciphers, None);
    // "overrides ssl_ciphers when ssl_cipher_suite is custom".
    let s = load_ok(
        None,
        &[
            ("KONG_SSL_CIPHER_SUITE", "custom"),
            ("KONG_SSL_CIPHERS", "foo:bar"),
            ("KONG_NGINX_HTTP_SSL_PROTOCOLS", "TLSv1.1 TLSv1.2"),
        ],
    );
    assert_eq!(s.ssl.ciphers.as_deref(), Some("foo:bar"));
    assert_eq!(
        s.ssl.protocols,
        vec![TlsProtocol::TlsV1_1, TlsProtocol::TlsV1_2]
    );
    assert!(s.ssl.prefer_server_ciphers);
    let err = load_err(
        None,
        &[
            ("KONG_SSL_CIPHER_SUITE", "custom"),
            ("KONG_SSL_PROTOCOLS", "TLSv1 TLSv1.1"),
        ],
    );
    assert!(
        err.errors[0]
            .reason
            .contains("none of these protocols is served"),
        "{}",
        err.errors[0].reason
    );
    let err = load_err(
        None,
        &[
            ("KONG_SSL_CIPHER_SUITE", "custom"),
            ("KONG_SSL_PROTOCOLS", "TLSv2"),
        ],
    );
    assert!(err.errors[0].reason.contains("invalid value: 'TLSv2'"));
    // The key's value never shows.
    let s = load_ok(
        None,
        &[
            ("KONG_SSL_CERT", "c.pem"),
            ("KONG_SSL_CERT_KEY", "secret.key"),
        ],
    );
    assert_eq!(s.redacted()["ssl_cert_key"], "******");
}
