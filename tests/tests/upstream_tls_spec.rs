//! Upstream TLS and mTLS through the real binary, against HTTPS upstreams
//! made in the tests (`gw_tests::tls_upstream`).
//!
//! Ports Kong's `spec/02-integration/05-proxy/18-upstream_tls_spec.lua`
//! (http subsystem; each `Cases::it` names the Kong `it(...)`), plus what
//! that spec leaves to nginx: the trust store and depth defaults
//! (`nginx_proxy_proxy_ssl_*`), the SNI, Kong's 502 with nothing proxied,
//! the error log, keep-alive pools per TLS settings, `client_ssl`, and the
//! refusals at load.
//!
//! Not ported: the `stream` subsystem and `tls` services (no stream
//! proxying here), and the `buffered_proxying = true` variants (they need
//! the `pre-function` plugin, Lua code).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gw_tests::gateway::{Cases, Gateway, TempDir};
use gw_tests::tls_upstream::{self_signed, Issued, Pki, TlsUpstream};
use gw_tests::{get, Response};

const MSG_502: &str = "An invalid response was received from the upstream server";
const NO_CERT: &str = "400 No required SSL certificate was sent";
const CA_ID: &str = "5e2f9d34-0000-4000-8000-0000000000ca";
const CERT_ID: &str = "5e2f9d34-0000-4000-8000-0000000000c1";
const BAD_CERT_ID: &str = "5e2f9d34-0000-4000-8000-0000000000c2";

/// A PEM as a YAML (JSON) string.
fn q(pem: &str) -> String {
    serde_json::to_string(pem).unwrap()
}

/// Kong's 502 for a failed try, exactly (text/plain, the default format).
fn assert_502(r: &Response) {
    assert_eq!(r.status, 502, "body: {}", r.body_str());
    let rid = r.header("x-kong-request-id").unwrap();
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.body_str(), format!("{MSG_502}\nrequest_id: {rid}\n"));
    assert!(r.header("server").is_some_and(|s| s.starts_with("kong/")));
}

fn assert_works(r: &Response) {
    assert_eq!(r.status, 200, "body: {}", r.body_str());
    assert_eq!(r.body_str().trim_end(), "it works");
}

fn assert_no_cert(r: &Response) {
    assert_eq!(r.status, 400, "body: {}", r.body_str());
    assert!(r.body_str().contains(NO_CERT), "{}", r.body_str());
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

/// Kong's fixtures: a root and intermediate ("mtls_certs"), `example.com`
/// served by two upstreams (one asks for a client certificate), a client
/// certificate they trust and one from elsewhere.
struct World {
    pki: Pki,
    other: Pki,
    client: Issued,
    bad_client: Issued,
    mtls: TlsUpstream,
    tls: TlsUpstream,
}

impl World {
    fn new() -> World {
        let pki = Pki::new("Kong Testing Root CA");
        let other = Pki::new("Yolo42");
        let server = pki.server(&["example.com"]);
        World {
            client: pki.client("client"),
            bad_client: other.client("not trusted"),
            mtls: TlsUpstream::start_with(&server, Some(&pki.root_pem())),
            tls: TlsUpstream::start(&server),
            pki,
            other,
        }
    }

    /// The spec's entities. `ca` is the CA certificate entity's PEM; the
    /// `*_extra` strings are YAML lines added to that entity.
    fn yml(&self, ca: &str, client: &Issued, extra: &Extra) -> String {
        format!(
            r#"_format_version: "3.0"
ca_certificates:
  - id: {CA_ID}
    cert: {ca}
certificates:
  - id: {CERT_ID}
    cert: {client_cert}
    key: {client_key}
  - id: {BAD_CERT_ID}
    cert: {bad_cert}
    key: {bad_key}
upstreams:
  - name: backend-mtls
    targets: [{{target: "127.0.0.1:{mtls}"}}]
{upstream}
  - name: example.com
    host_header: example.com
    targets: [{{target: "127.0.0.1:{tls}"}}]
services:
  - name: protected-service-mtls
    url: https://127.0.0.1:{mtls}/
{service_mtls}
    routes: [{{hosts: [example.com], paths: [/mtls]}}]
  - name: protected-service
    url: https://example.com/
{service_tls}
    routes: [{{hosts: [example.com], paths: [/tls]}}]
  - name: protected-service-mtls-upstream
    url: https://backend-mtls/
{service_mtls_upstream}
    routes: [{{hosts: [example.com], paths: [/mtls-upstream]}}]
"#,
            ca = q(ca),
            client_cert = q(&client.chain_pem),
            client_key = q(&client.key_pem),
            bad_cert = q(&self.bad_client.chain_pem),
            bad_key = q(&self.bad_client.key_pem),
            mtls = self.mtls.port,
            tls = self.tls.port,
            upstream = extra.upstream,
            service_mtls = extra.service_mtls,
            service_tls = extra.service_tls,
            service_mtls_upstream = extra.service_mtls_upstream,
        )
    }
}

#[derive(Default)]
struct Extra {
    upstream: &'static str,
    service_mtls: &'static str,
    service_tls: &'static str,
    service_mtls_upstream: &'static str,
}

const WITH_CERT: &str = "    client_certificate: 5e2f9d34-0000-4000-8000-0000000000c1";
const WITH_BAD_CERT: &str = "    client_certificate: 5e2f9d34-0000-4000-8000-0000000000c2";

fn req(gw: &Gateway, path: &str) -> Response {
    get(gw.port, path, &[("Host", "example.com")])
}

/// describe("mutual TLS authentication against upstream with Service
/// object" / "... with Upstream object" / "when both ... are set").
#[test]
fn kong_mutual_tls_against_upstream() {
    let w = World::new();
    let ca = w.pki.root_pem();
    let gw = Gateway::start(&w.yml(&ca, &w.client, &Extra::default()));
    let mut c = Cases::new();

    c.it(
        "Service object: no client certificate supplied: accessing protected upstream",
        || {
            assert_no_cert(&req(&gw, "/mtls"));
        },
    );
    let with_service_cert = Extra {
        service_mtls: WITH_CERT,
        ..Extra::default()
    };
    c.it(
        "client certificate supplied via service.client_certificate: accessing protected upstream",
        || {
            assert!(gw.reload_and_wait(&w.yml(&ca, &w.client, &with_service_cert)));
            assert_works(&req(&gw, "/mtls"));
            assert_eq!(
                w.mtls.last().client_cert.as_deref(),
                Some(w.client.der.as_slice())
            );
        },
    );
    c.it("send updated client certificate", || {
        // The same certificate entity, another certificate in it.
        let updated = w.pki.client("updated");
        assert!(gw.reload_and_wait(&w.yml(&ca, &updated, &with_service_cert)));
        assert_works(&req(&gw, "/mtls"));
        assert_eq!(
            w.mtls.last().client_cert.as_deref(),
            Some(updated.der.as_slice())
        );
    });
    c.it("remove client_certificate removes access", || {
        assert!(gw.reload_and_wait(&w.yml(&ca, &w.client, &Extra::default())));
        assert_no_cert(&req(&gw, "/mtls"));
    });

    c.it(
        "Upstream object: no client certificate supplied: accessing protected upstream",
        || {
            assert_no_cert(&req(&gw, "/mtls-upstream"));
        },
    );
    let with_upstream_cert = Extra {
        upstream: WITH_CERT,
        ..Extra::default()
    };
    c.it(
        "client certificate supplied via upstream.client_certificate: accessing protected upstream",
        || {
            assert!(gw.reload_and_wait(&w.yml(&ca, &w.client, &with_upstream_cert)));
            assert_works(&req(&gw, "/mtls-upstream"));
            assert_eq!(
                w.mtls.last().client_cert.as_deref(),
                Some(w.client.der.as_slice())
            );
        },
    );
    c.it(
        "upstream.client_certificate: remove client_certificate removes access",
        || {
            assert!(gw.reload_and_wait(&w.yml(&ca, &w.client, &Extra::default())));
            assert_no_cert(&req(&gw, "/mtls-upstream"));
        },
    );

    c.it("access is allowed because Service.client_certificate overrides Upstream.client_certificate", || {
        let both = Extra {
            upstream: WITH_BAD_CERT,
            service_mtls_upstream: WITH_CERT,
            ..Extra::default()
        };
        assert!(gw.reload_and_wait(&w.yml(&ca, &w.client, &both)));
        assert_works(&req(&gw, "/mtls-upstream"));
        assert_eq!(w.mtls.last().client_cert.as_deref(), Some(w.client.der.as_slice()));
    });
    c.it(
        "(not in Kong's spec) a certificate the upstream does not trust fails the handshake: 502",
        || {
            let bad = Extra {
                service_mtls: WITH_BAD_CERT,
                ..Extra::default()
            };
            assert!(gw.reload_and_wait(&w.yml(&ca, &w.client, &bad)));
            let before = w.mtls.count();
            assert_502(&req(&gw, "/mtls"));
            assert_eq!(w.mtls.count(), before, "nothing proxied");
        },
    );
    c.finish();
}

/// describe("TLS verification options against upstream").
#[test]
fn kong_tls_verification_options_against_upstream() {
    let w = World::new();
    let ca = w.pki.root_pem();
    let gw = Gateway::start(&w.yml(&ca, &w.client, &Extra::default()));
    let mut c = Cases::new();

    c.it("tls_verify: default is off", || {
        assert_works(&req(&gw, "/tls"));
    });
    c.it("tls_verify: turn it on, request is blocked", || {
        let on = Extra {
            service_tls: "    tls_verify: true",
            ..Extra::default()
        };
        assert!(gw.reload_and_wait(&w.yml(&ca, &w.client, &on)));
        let before = w.tls.count();
        assert_502(&req(&gw, "/tls"));
        assert_eq!(w.tls.count(), before, "nothing proxied");
        // No proxy_ssl_trusted_certificate: nothing is trusted.
        assert!(
            gw.proc.wait_for_line(
                "upstream SSL certificate verify error: (20:unable to get local issuer certificate) while SSL handshaking to upstream, ssl name: \"example.com\"",
                Duration::from_secs(5)
            ),
            "{}",
            gw.output()
        );
    });
    let with_ca = Extra {
        service_tls:
            "    tls_verify: true\n    ca_certificates: [5e2f9d34-0000-4000-8000-0000000000ca]",
        ..Extra::default()
    };
    c.it(
        "ca_certificates: request is allowed through once correct CA certificate is set",
        || {
            assert!(gw.reload_and_wait(&w.yml(&ca, &w.client, &with_ca)));
            assert_works(&req(&gw, "/tls"));
            assert_eq!(w.tls.last().sni.as_deref(), Some("example.com"));
        },
    );
    c.it("ca_certificates: request is not allowed through once the CA certificate is updated to other ca", || {
        assert!(gw.reload_and_wait(&w.yml(&w.other.root_pem(), &w.client, &with_ca)));
        let before = w.tls.count();
        assert_502(&req(&gw, "/tls"));
        assert_eq!(w.tls.count(), before, "nothing proxied");
    });
    c.it("ca_certificates: request is allowed through once the CA certificate is updated back to the correct ca", || {
        assert!(gw.reload_and_wait(&w.yml(&ca, &w.client, &with_ca)));
        assert_works(&req(&gw, "/tls"));
    });
    c.it("tls_verify_depth: request is not allowed through if depth limit is too low", || {
        let depth0 = Extra {
            service_tls: "    tls_verify: true\n    tls_verify_depth: 0\n    ca_certificates: [5e2f9d34-0000-4000-8000-0000000000ca]",
            ..Extra::default()
        };
        assert!(gw.reload_and_wait(&w.yml(&ca, &w.client, &depth0)));
        let before = w.tls.count();
        assert_502(&req(&gw, "/tls"));
        assert_eq!(w.tls.count(), before, "nothing proxied");
        assert!(gw.proc.wait_for_line(
            "upstream SSL certificate verify error: (22:certificate chain too long)",
            Duration::from_secs(5)
        ));
    });
    c.it("tls_verify_depth: request is allowed through if depth limit is sufficient", || {
        let depth1 = Extra {
            service_tls: "    tls_verify: true\n    tls_verify_depth: 1\n    ca_certificates: [5e2f9d34-0000-4000-8000-0000000000ca]",
            ..Extra::default()
        };
        assert!(gw.reload_and_wait(&w.yml(&ca, &w.client, &depth1)));
        assert_works(&req(&gw, "/tls"));
    });
    c.finish();
}

/// A PEM written to a file (nginx directives take paths).
fn pem_file(dir: &TempDir, name: &str, pem: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, pem).unwrap();
    path.to_str().unwrap().to_string()
}

/// describe("... (nginx_proxy_proxy_ssl_verify: on, ...)"): Kong's spec
/// injects `proxy_ssl_verify on` with an unrelated CA as the trust store.
#[test]
fn kong_nginx_proxy_proxy_ssl_verify_on() {
    let w = World::new();
    let ca = w.pki.root_pem();
    let dir = TempDir::new("upstream-tls");
    let unrelated = pem_file(&dir, "unrelated.crt", &w.other.root_pem());
    let env = [
        ("KONG_NGINX_PROXY_PROXY_SSL_VERIFY", "on"),
        (
            "KONG_NGINX_PROXY_PROXY_SSL_TRUSTED_CERTIFICATE",
            unrelated.as_str(),
        ),
    ];
    let gw = Gateway::start_with(&w.yml(&ca, &w.client, &Extra::default()), &env);
    let mut c = Cases::new();
    c.it("tls_verify: default is on, request is blocked", || {
        assert_502(&req(&gw, "/tls"));
        assert_eq!(w.tls.count(), 0, "nothing proxied");
    });
    c.it("tls_verify: turn it off, request is allowed", || {
        let off = Extra {
            service_tls: "    tls_verify: false",
            ..Extra::default()
        };
        assert!(gw.reload_and_wait(&w.yml(&ca, &w.client, &off)));
        assert_works(&req(&gw, "/tls"));
    });
    c.it(
        "(not in Kong's spec) the service's ca_certificates replace the default store",
        || {
            let with_ca = Extra {
                service_tls: "    ca_certificates: [5e2f9d34-0000-4000-8000-0000000000ca]",
                ..Extra::default()
            };
            assert!(gw.reload_and_wait(&w.yml(&ca, &w.client, &with_ca)));
            assert_works(&req(&gw, "/tls"));
        },
    );
    c.finish();
}

/// The directive's trust store and depth: `proxy_ssl_trusted_certificate`
/// trusts the upstream for every service without `ca_certificates`, and
/// `proxy_ssl_verify_depth` (nginx: 1) limits the chain.
#[test]
fn proxy_ssl_trusted_certificate_and_verify_depth_are_the_defaults() {
    let w = World::new();
    let ca = w.pki.root_pem();
    let dir = TempDir::new("upstream-tls");
    let root = pem_file(&dir, "root.crt", &ca);
    let yml = w.yml(&ca, &w.client, &Extra::default());
    // A relative path is relative to the prefix, as nginx resolves it.
    let prefix = dir.path().join("prefix");
    let prefix = prefix.to_str().unwrap();
    for trusted in [root.as_str(), "../root.crt"] {
        let gw = Gateway::start_with(
            &yml,
            &[
                ("KONG_PREFIX", prefix),
                ("KONG_NGINX_HTTP_PROXY_SSL_VERIFY", "on"),
                ("KONG_NGINX_PROXY_PROXY_SSL_TRUSTED_CERTIFICATE", trusted),
            ],
        );
        // leaf <- intermediate <- root: depth 1 (nginx's default) is enough.
        assert_works(&req(&gw, "/tls"));
    }
    let gw = Gateway::start_with(
        &yml,
        &[
            ("KONG_NGINX_PROXY_PROXY_SSL_VERIFY", "on"),
            (
                "KONG_NGINX_PROXY_PROXY_SSL_TRUSTED_CERTIFICATE",
                root.as_str(),
            ),
            ("KONG_NGINX_PROXY_PROXY_SSL_VERIFY_DEPTH", "0"),
        ],
    );
    assert_502(&req(&gw, "/tls"));
    // A service's own depth wins over the directive's.
    let depth1 = Extra {
        service_tls: "    tls_verify_depth: 1",
        ..Extra::default()
    };
    assert!(gw.reload_and_wait(&w.yml(&ca, &w.client, &depth1)));
    assert_works(&req(&gw, "/tls"));
}

/// Kong's template points no proxy directive at `lua_ssl_trusted_certificate`:
/// it is the cosockets' store, not the proxy's. With only it set, a service
/// verifying its upstream still trusts nothing.
#[test]
fn lua_ssl_trusted_certificate_is_not_the_proxy_trust_store() {
    let w = World::new();
    let ca = w.pki.root_pem();
    let dir = TempDir::new("upstream-tls");
    let root = pem_file(&dir, "root.crt", &ca);
    let on = Extra {
        service_tls: "    tls_verify: true",
        ..Extra::default()
    };
    let gw = Gateway::start_with(
        &w.yml(&ca, &w.client, &on),
        &[("KONG_LUA_SSL_TRUSTED_CERTIFICATE", root.as_str())],
    );
    assert_502(&req(&gw, "/tls"));
    assert_eq!(w.tls.count(), 0);
}

/// nginx's `proxy_ssl_name $upstream_host` with `proxy_ssl_server_name on`:
/// the SNI is the Host the upstream gets, without its port; none for an IP.
#[test]
fn the_sni_is_the_upstream_host() {
    let w = World::new();
    let server = w.pki.server(&["example.com", "preserved.test"]);
    let up = TlsUpstream::start(&server);
    let yml = format!(
        r#"_format_version: "3.0"
ca_certificates:
  - id: {CA_ID}
    cert: {ca}
upstreams:
  - name: named-upstream
    host_header: example.com
    targets: [{{target: "127.0.0.1:{port}"}}]
services:
  - name: by-ip
    url: https://127.0.0.1:{port}/
    routes: [{{paths: [/ip]}}]
  - name: by-ip-verified
    url: https://127.0.0.1:{port}/
    tls_verify: true
    ca_certificates: [{CA_ID}]
    routes:
      - {{paths: [/ip-verified]}}
      - {{paths: [/preserved], preserve_host: true}}
  - name: by-upstream
    url: https://named-upstream/
    tls_verify: true
    ca_certificates: [{CA_ID}]
    routes: [{{paths: [/upstream]}}]
"#,
        ca = q(&w.pki.root_pem()),
        port = up.port,
    );
    let gw = Gateway::start(&yml);
    let mut c = Cases::new();
    c.it("an IP host sends no SNI", || {
        assert_works(&get(gw.port, "/ip", &[("Host", "client.test")]));
        let r = up.last();
        assert_eq!(r.sni, None);
        assert_eq!(
            r.header("host"),
            Some(format!("127.0.0.1:{}", up.port).as_str())
        );
    });
    c.it(
        "an IP host is verified as nginx does: by name, so example.com's certificate fails",
        || {
            // Kong's spec: "domain name needed for hostname check".
            assert_502(&get(gw.port, "/ip-verified", &[("Host", "client.test")]));
            assert!(gw.proc.wait_for_line(
                "upstream SSL certificate does not match \"127.0.0.1\"",
                Duration::from_secs(5)
            ));
        },
    );
    c.it(
        "an upstream's host_header is the SNI, its port stripped",
        || {
            assert_works(&get(gw.port, "/upstream", &[("Host", "client.test")]));
            let r = up.last();
            assert_eq!(r.sni.as_deref(), Some("example.com"));
            assert_eq!(
                r.header("host"),
                Some(format!("example.com:{}", up.port).as_str())
            );
        },
    );
    c.it(
        "preserve_host: the client's Host is the SNI and the name verified",
        || {
            assert_works(&get(
                gw.port,
                "/preserved",
                &[("Host", "preserved.test:8443")],
            ));
            assert_eq!(up.last().sni.as_deref(), Some("preserved.test"));
            // A name the certificate does not hold fails verification.
            let r = get(gw.port, "/preserved", &[("Host", "elsewhere.test")]);
            assert_502(&r);
            assert!(gw.proc.wait_for_line(
                "upstream SSL certificate does not match \"elsewhere.test\"",
                Duration::from_secs(5)
            ));
        },
    );
    c.finish();
}

/// A bad upstream certificate: Kong's 502 (after the service's retries),
/// nothing reaches the upstream, and the error log says why.
#[test]
fn bad_upstream_certificates_give_kongs_502_and_proxy_nothing() {
    let w = World::new();
    let expired = TlsUpstream::start(&w.pki.server_expired(&["example.com"]));
    let wrong_name = TlsUpstream::start(&w.pki.server(&["other.test"]));
    let selfie = TlsUpstream::start(&self_signed(&["example.com"]));
    let svc = |name: &str, port: u16| {
        format!(
            "  - name: {name}\n    url: https://127.0.0.1:{port}/\n    retries: 2\n    tls_verify: true\n    ca_certificates: [{CA_ID}]\n    routes: [{{paths: [/{name}], preserve_host: true}}]\n"
        )
    };
    let yml = format!(
        "_format_version: \"3.0\"\nca_certificates:\n  - id: {CA_ID}\n    cert: {}\nservices:\n{}{}{}",
        q(&w.pki.root_pem()),
        svc("expired", expired.port),
        svc("wrong-name", wrong_name.port),
        svc("self-signed", selfie.port),
    );
    let gw = Gateway::start(&yml);
    let mut c = Cases::new();
    for (path, up, log) in [
        (
            "/expired",
            &expired,
            "upstream SSL certificate verify error: (10:certificate has expired)",
        ),
        (
            "/wrong-name",
            &wrong_name,
            "upstream SSL certificate does not match \"example.com\"",
        ),
        (
            "/self-signed",
            &selfie,
            "upstream SSL certificate verify error: (18:self-signed certificate)",
        ),
    ] {
        c.it(path, || {
            let r = get(gw.port, path, &[("Host", "example.com")]);
            assert_502(&r);
            assert_eq!(up.count(), 0, "nothing proxied");
            // nginx tries again (proxy_next_upstream error): 1 + retries.
            assert!(wait_until(Duration::from_secs(5), || up.connections() == 3));
            assert!(
                gw.proc.wait_for_line(log, Duration::from_secs(5)),
                "{}",
                gw.output()
            );
        });
    }
    c.finish();
}

/// Kong's pool key (`kong/init.lua`: ip|port|host|verify|depth|CA ids|client
/// certificate): a connection made with one service's TLS settings is never
/// reused by a service with others.
#[test]
fn pooled_connections_are_not_shared_across_tls_settings() {
    let w = World::new();
    let yml = format!(
        r#"_format_version: "3.0"
certificates:
  - id: {CERT_ID}
    cert: {cert}
    key: {key}
services:
  - name: with-cert
    url: https://127.0.0.1:{port}/
    client_certificate: {CERT_ID}
    routes: [{{paths: [/with]}}]
  - name: with-cert-too
    url: https://127.0.0.1:{port}/
    client_certificate: {CERT_ID}
    routes: [{{paths: [/with-too]}}]
  - name: without
    url: https://127.0.0.1:{port}/
    routes: [{{paths: [/without]}}]
"#,
        cert = q(&w.client.chain_pem),
        key = q(&w.client.key_pem),
        port = w.mtls.port,
    );
    let gw = Gateway::start(&yml);
    assert_works(&get(gw.port, "/with", &[]));
    let first = w.mtls.last().connection;
    // Same settings: the pooled, authenticated connection is reused.
    assert_works(&get(gw.port, "/with-too", &[]));
    assert_eq!(w.mtls.last().connection, first);
    // Other settings: a connection of its own, without a certificate.
    assert_no_cert(&get(gw.port, "/without", &[]));
    assert_ne!(w.mtls.last().connection, first);
    assert_eq!(w.mtls.last().client_cert, None);
}

/// Kong's `client_ssl` (`proxy_ssl_certificate`): the client certificate
/// of services and upstreams that name none; a service's own wins.
#[test]
fn client_ssl_is_the_default_client_certificate() {
    let w = World::new();
    let dir = TempDir::new("upstream-tls");
    let cert = pem_file(&dir, "client.crt", &w.client.chain_pem);
    let key = pem_file(&dir, "client.key", &w.client.key_pem);
    let ca = w.pki.root_pem();
    let service_bad = Extra {
        service_mtls_upstream: WITH_BAD_CERT,
        ..Extra::default()
    };
    let gw = Gateway::start_with(
        &w.yml(&ca, &w.client, &service_bad),
        &[
            ("KONG_CLIENT_SSL", "on"),
            ("KONG_CLIENT_SSL_CERT", cert.as_str()),
            ("KONG_CLIENT_SSL_CERT_KEY", key.as_str()),
        ],
    );
    assert_works(&req(&gw, "/mtls"));
    assert_eq!(
        w.mtls.last().client_cert.as_deref(),
        Some(w.client.der.as_slice())
    );
    // The service's (untrusted) certificate replaces the default one.
    assert_502(&req(&gw, "/mtls-upstream"));
}

fn refused(yml: &str) -> String {
    match Gateway::try_start(yml) {
        Ok(_) => panic!("the gateway started with:\n{yml}"),
        Err(out) => out,
    }
}

/// Bad upstream TLS entities are refused at load, each error naming the
/// entity, the field and why (Kong's words where it has them); a reload
/// with one keeps the last good configuration.
#[test]
fn bad_upstream_tls_config_is_refused_at_load() {
    let w = World::new();
    let ca_doc = |cert: &str| {
        format!(
            "_format_version: \"3.0\"\nca_certificates:\n  - id: {CA_ID}\n    cert: {}\n",
            q(cert)
        )
    };
    let mut c = Cases::new();
    c.it("a CA certificate that is not PEM", || {
        let out = refused(&ca_doc("not a certificate"));
        assert!(
            out.contains(&format!(
                "in 'ca_certificates' entity '{CA_ID}': field 'cert': invalid certificate: "
            )),
            "{out}"
        );
    });
    c.it("a certificate that is not a CA", || {
        let out = refused(&ca_doc(&w.client.cert_pem));
        assert!(out.contains("certificate does not appear to be a CA because it is missing the \"CA\" basic constraint"), "{out}");
    });
    c.it("an expired CA certificate", || {
        let old = {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.not_before = rcgen::date_time_ymd(2001, 1, 1);
            p.not_after = rcgen::date_time_ymd(2002, 1, 1);
            p.self_signed(&key).unwrap().pem()
        };
        let out = refused(&ca_doc(&old));
        assert!(
            out.contains("certificate expired, \"Not After\" time is in the past"),
            "{out}"
        );
    });
    c.it("an unknown CA certificate id", || {
        let out = refused(
            "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: https://127.0.0.1:1/\n    ca_certificates: [5e2f9d34-0000-4000-8000-0000000000ff]\n",
        );
        assert!(
            out.contains("in 'services' entity 's': field 'ca_certificates': CA Certificate '5e2f9d34-0000-4000-8000-0000000000ff' does not exist"),
            "{out}"
        );
    });
    c.it("an unknown client_certificate", || {
        let out = refused(&format!(
            "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: https://127.0.0.1:1/\n    client_certificate: {CERT_ID}\n"
        ));
        assert!(
            out.contains(&format!("in 'services' entity 's': field 'client_certificate': invalid reference 'client_certificate: {CERT_ID}' (no such entry in 'certificates')")),
            "{out}"
        );
    });
    c.it("upstream TLS fields on an http service", || {
        let out = refused(
            "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:1/\n    tls_verify_depth: 1\n",
        );
        assert!(
            out.contains("in 'services' entity 's': field 'tls_verify_depth': value must be null (only allowed when 'protocol' is 'https' or 'tls')"),
            "{out}"
        );
    });
    c.it("a reload with a bad one keeps the last good configuration", || {
        let ca = w.pki.root_pem();
        let with_ca = Extra {
            service_tls: "    tls_verify: true\n    ca_certificates: [5e2f9d34-0000-4000-8000-0000000000ca]",
            ..Extra::default()
        };
        let gw = Gateway::start(&w.yml(&ca, &w.client, &with_ca));
        assert_works(&req(&gw, "/tls"));
        let hash = gw.config_hash();
        gw.reload(&w.yml(&w.client.cert_pem, &w.client, &with_ca));
        assert!(gw.proc.wait_for_line("config reload failed, keeping the running config", Duration::from_secs(5)));
        assert_eq!(gw.config_hash(), hash);
        assert_works(&req(&gw, "/tls"));
    });
    c.finish();
}

/// What nginx and Kong refuse to start with.
#[test]
fn bad_upstream_tls_settings_stop_the_start() {
    let yml = "_format_version: \"3.0\"\n";
    let mut c = Cases::new();
    c.it("proxy_ssl_verify without a trust store", || {
        let out = Gateway::try_start_with(yml, &[("KONG_NGINX_PROXY_PROXY_SSL_VERIFY", "on")])
            .err()
            .unwrap();
        assert!(out.contains("KONG_NGINX_PROXY_PROXY_SSL_VERIFY: no proxy_ssl_trusted_certificate for proxy_ssl_verify"), "{out}");
    });
    c.it("a trust store that cannot be read", || {
        let out = Gateway::try_start_with(
            yml,
            &[
                ("KONG_NGINX_PROXY_PROXY_SSL_VERIFY", "on"),
                ("KONG_NGINX_PROXY_PROXY_SSL_TRUSTED_CERTIFICATE", "/nonexistent/ca.crt"),
            ],
        )
        .err()
        .unwrap();
        assert!(out.contains("proxy_ssl_trusted_certificate: SSL_CTX_load_verify_locations(\"/nonexistent/ca.crt\") failed"), "{out}");
    });
    c.it("client_ssl without its key", || {
        let out = Gateway::try_start_with(
            yml,
            &[
                ("KONG_CLIENT_SSL", "on"),
                ("KONG_CLIENT_SSL_CERT", "/nonexistent.crt"),
            ],
        )
        .err()
        .unwrap();
        assert!(
            out.contains("client_ssl_cert_key must be specified"),
            "{out}"
        );
    });
    c.it(
        "client_ssl with a certificate that cannot be loaded",
        || {
            let out = Gateway::try_start_with(
                yml,
                &[
                    ("KONG_CLIENT_SSL", "on"),
                    ("KONG_CLIENT_SSL_CERT", "/nonexistent.crt"),
                    ("KONG_CLIENT_SSL_CERT_KEY", "/nonexistent.key"),
                ],
            )
            .err()
            .unwrap();
            assert!(
                out.contains("client_ssl_cert: failed loading certificate from /nonexistent.crt"),
                "{out}"
            );
        },
    );
    c.finish();
}

/// Kong's healthchecker (`kong/runloop/balancer/healthcheckers.lua`
/// create_healthchecker) presents the upstream's `client_certificate` in
/// its `https` active checks: without it, an upstream that asks for one
/// would be marked down.
#[test]
fn https_health_checks_present_the_upstreams_client_certificate() {
    let w = World::new();
    let yml = |cert: &str| {
        format!(
            r#"_format_version: "3.0"
certificates:
  - id: {CERT_ID}
    cert: {c}
    key: {k}
upstreams:
  - name: checked
{cert}
    healthchecks:
      active:
        type: https
        http_path: /status
        https_verify_certificate: false
        timeout: 0.5
        healthy: {{interval: 0.1, successes: 1}}
        unhealthy: {{interval: 0.1, http_failures: 1, http_statuses: [400]}}
    targets: [{{target: "127.0.0.1:{port}"}}]
services:
  - name: s
    url: https://checked/
    routes: [{{paths: [/]}}]
"#,
            c = q(&w.client.chain_pem),
            k = q(&w.client.key_pem),
            port = w.mtls.port,
        )
    };
    let gw = Gateway::start(&yml(WITH_CERT));
    let probed = |with_cert: bool| {
        w.mtls.requests().iter().any(|r| {
            r.target == "/status"
                && r.client_cert.as_deref() == with_cert.then_some(w.client.der.as_slice())
        })
    };
    assert!(
        wait_until(Duration::from_secs(5), || probed(true)),
        "no probe with the certificate"
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_works(&get(gw.port, "/", &[]));
    // Without it, the probes get nginx's 400 and the target goes down.
    assert!(gw.reload_and_wait(&yml("")));
    assert!(wait_until(Duration::from_secs(5), || probed(false)));
    assert!(wait_until(Duration::from_secs(5), || get(
        gw.port,
        "/",
        &[]
    )
    .status
        == 503));
}
