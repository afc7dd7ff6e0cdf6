//! Downstream TLS on `ssl` proxy listeners. Ports Kong's
//! `spec/02-integration/05-proxy/06-ssl_spec.lua` (the "SSL" describe
//! blocks: default certificate, SNI selection and wildcards, SSL
//! termination with `https` routes and `x-forwarded-proto`, the `*` SNI,
//! invalid SNIs), plus what the gateway adds around it: `ssl_cert` forms,
//! the generated default, certificate swap on reload, protocols, ALPN,
//! session resumption, routes' `snis`, `$scheme` and the log serializer's
//! `request.tls`. Each Kong `it(...)` is a named case.
//!
//! Not ported: "proxy ssl verify" and "proxy_ssl_name" (upstream TLS,
//! tests/tests/upstream_tls_spec.rs), "TLS proxy" (stream `tls` routes:
//! no stream listeners), and the invalid-SNI log lines (rustls refuses or
//! ignores such names itself: the default certificate is served, which
//! is checked).
//!
//! Certificates are made here with rcgen: ECDSA P-256, with Ed25519 as the
//! `cert_alt` type (ring generates no RSA keys).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gw_tests::gateway::{fill_ports, Cases, Gateway, Recorder, TempDir};
use gw_tests::tls::{https_get, served_cert, SelfSigned, TlsClient, TlsOptions};
use gw_tests::{free_port, get, raw_request};
use rustls::SignatureScheme;

fn listen(tls_port: u16) -> String {
    format!("127.0.0.1:{{PROXY_PORT}}, 127.0.0.1:{tls_port} ssl")
}

fn block(pem: &str) -> String {
    SelfSigned::yaml(pem, 6)
}

struct Fixture {
    cert: SelfSigned,
    cert_ed: SelfSigned,
    alt: SelfSigned,
    alt_alt: SelfSigned,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            cert: SelfSigned::new("ssl-example.com", &["ssl-example.com"]),
            cert_ed: SelfSigned::with_alg(
                "ssl-example.com",
                &["ssl-example.com"],
                &rcgen::PKCS_ED25519,
            ),
            alt: SelfSigned::new("ssl-alt.com", &["ssl-alt.com"]),
            alt_alt: SelfSigned::new("ssl-alt-alt.com", &["ssl-alt-alt.com"]),
        }
    }

    fn yaml(&self) -> String {
        format!(
            r#"_format_version: "3.0"
services:
- name: global-cert
  url: http://{{UP0}}
  routes:
  - protocols: [https]
    hosts: [global.com]
- name: api-1
  url: http://{{UP0}}
  routes:
  - protocols: [https]
    hosts: [example.com, ssl1.com]
  - protocols: [https]
    hosts: [sni.example.com]
    snis: [sni.example.com]
  - protocols: [https]
    hosts: [example.com]
    paths: [/redirect-301]
    https_redirect_status_code: 301
  - protocols: [https]
    hosts: [example.com]
    paths: [/redirect-302]
    https_redirect_status_code: 302
- name: clear
  url: http://{{UP0}}
  routes:
  - protocols: [http]
    hosts: [example-clear.com]
- name: echo
  url: http://{{UP0}}
  routes:
  - protocols: [http, https]
    hosts: [echo.test]
    plugins:
    - name: request-termination
      config: {{status_code: 200, echo: true}}
certificates:
- id: 1b1a1b8c-2a7d-4d4e-9f6b-2c1d7a3a0001
  cert: {cert}
  key: {key}
  cert_alt: {cert_alt}
  key_alt: {key_alt}
  snis: [{{name: example.com}}, {{name: ssl1.com}}]
- id: 1b1a1b8c-2a7d-4d4e-9f6b-2c1d7a3a0002
  cert: {alt}
  key: {alt_key}
  snis: [{{name: "*.wildcard.com"}}, {{name: "wildcard.*"}}]
- id: 1b1a1b8c-2a7d-4d4e-9f6b-2c1d7a3a0003
  cert: {alt_alt}
  key: {alt_alt_key}
  snis:
  - {{name: wildcard.org}}
  - {{name: "test.wildcard.*"}}
  - {{name: "*.www.wildcard.com"}}
  - {{name: sni.example.com}}
"#,
            cert = block(&self.cert.cert_pem),
            key = block(&self.cert.key_pem),
            cert_alt = block(&self.cert_ed.cert_pem),
            key_alt = block(&self.cert_ed.key_pem),
            alt = block(&self.alt.cert_pem),
            alt_key = block(&self.alt.key_pem),
            alt_alt = block(&self.alt_alt.cert_pem),
            alt_alt_key = block(&self.alt_alt.key_pem),
        )
    }
}

fn cn(port: u16, sni: &str) -> Option<String> {
    gw_tests::tls::common_name(&served_cert(port, Some(sni)))
}

#[test]
fn ssl_spec_certificates_and_termination() {
    let up = Recorder::start();
    let f = Fixture::new();
    let tls = free_port();
    let gw = Gateway::start_with(
        &fill_ports(&f.yaml(), &[up.port]),
        &[
            ("KONG_PROXY_LISTEN", &listen(tls)),
            ("KONG_TRUSTED_IPS", "127.0.0.1"),
        ],
    );
    let mut t = Cases::new();

    // describe("global SSL")
    t.it(
        "fallbacks on the default proxy SSL certificate when SNI is not provided by client",
        || {
            let r = https_get(tls, None, "global.com", "/status/200");
            assert_eq!(r.status, 200, "{}", r.body_str());
            // The generated default (Kong's prefix_handler): CN=localhost.
            let der = served_cert(tls, None);
            assert_eq!(
                gw_tests::tls::common_name(&der).as_deref(),
                Some("localhost")
            );
            let pem = std::fs::read(gw.prefix.join("ssl/kong-default-ecdsa.crt")).unwrap();
            let on_disk = rustls_pemfile::certs(&mut &pem[..])
                .next()
                .unwrap()
                .unwrap();
            assert_eq!(on_disk.as_ref(), &der[..]);
        },
    );

    // describe("handshake")
    t.it(
        "sets the default fallback SSL certificate if no SNI match",
        || {
            assert_eq!(cn(tls, "test.com").as_deref(), Some("localhost"));
        },
    );
    t.it("sets the configured SSL certificate if SNI match", || {
        assert_eq!(cn(tls, "ssl1.com").as_deref(), Some("ssl-example.com"));
        assert_eq!(cn(tls, "example.com").as_deref(), Some("ssl-example.com"));
        // SNI is case-insensitive (rustls lowers it; names are compiled lower).
        assert_eq!(cn(tls, "EXAMPLE.com").as_deref(), Some("ssl-example.com"));
    });
    t.it("matches *.wildcard.com (prefix)", || {
        assert_eq!(cn(tls, "test.wildcard.com").as_deref(), Some("ssl-alt.com"));
    });
    t.it("matches wildcard.* (suffix)", || {
        assert_eq!(cn(tls, "wildcard.eu").as_deref(), Some("ssl-alt.com"));
    });
    t.it("respects matching priorities (exact first)", || {
        assert_eq!(cn(tls, "wildcard.org").as_deref(), Some("ssl-alt-alt.com"));
    });
    t.it("respects matching priorities (prefix second)", || {
        assert_eq!(cn(tls, "test.wildcard.com").as_deref(), Some("ssl-alt.com"));
    });
    t.it("respects matching priorities (suffix third)", || {
        assert_eq!(
            cn(tls, "test.wildcard.org").as_deref(),
            Some("ssl-alt-alt.com")
        );
    });
    t.it("matches *.www.wildcard.com", || {
        assert_eq!(
            cn(tls, "test.www.wildcard.com").as_deref(),
            Some("ssl-alt-alt.com")
        );
        // Only the first label is replaced: no match two labels down.
        assert_eq!(cn(tls, "a.b.wildcard.com").as_deref(), Some("localhost"));
    });
    t.it(
        "serves cert_alt to a client that only verifies its key type",
        || {
            let only = |scheme| TlsOptions {
                sni: Some("example.com".into()),
                schemes: Some(vec![scheme]),
                ..TlsOptions::default()
            };
            let ed = TlsClient::connect(tls, &only(SignatureScheme::ED25519)).unwrap();
            assert_eq!(ed.peer_der(), f.cert_ed.der);
            let ec =
                TlsClient::connect(tls, &only(SignatureScheme::ECDSA_NISTP256_SHA256)).unwrap();
            assert_eq!(ec.peer_der(), f.cert.der);
        },
    );
    t.it(
        "invalid SNI: an IP address gets the default certificate",
        || {
            // rustls sends no SNI for an IP (RFC 6066), as Kong's "must not be
            // an IP" case ends: the default certificate.
            assert_eq!(
                gw_tests::tls::common_name(&served_cert(tls, None)).as_deref(),
                Some("localhost")
            );
        },
    );

    // describe("SSL termination")
    t.it(
        "blocks request without HTTPS if protocols = { http }",
        || {
            for host in ["example.com", "sni.example.com"] {
                let r = get(gw.port, "/", &[("Host", host)]);
                assert_eq!(r.status, 426, "{host}");
                assert!(r.body_str().contains("Please use HTTPS protocol"));
                assert!(r
                    .header_all("connection")
                    .iter()
                    .any(|v| v.contains("Upgrade")));
                assert_eq!(r.header("upgrade"), Some("TLS/1.2, HTTP/1.1"));
            }
        },
    );
    t.it(
        "returns 301 when route has https_redirect_status_code set to 301",
        || {
            let r = get(gw.port, "/redirect-301", &[("Host", "example.com")]);
            assert_eq!(r.status, 301);
            assert_eq!(
                r.header("location"),
                Some("https://example.com/redirect-301")
            );
        },
    );
    t.it(
        "returns 302 when route has https_redirect_status_code set to 302",
        || {
            let r = get(gw.port, "/redirect-302?foo=bar", &[("Host", "example.com")]);
            assert_eq!(r.status, 302);
            assert_eq!(
                r.header("location"),
                Some("https://example.com/redirect-302?foo=bar")
            );
        },
    );
    t.it(
        "proxies an https route over TLS with X-Forwarded-Proto: https",
        || {
            let r = https_get(tls, Some("example.com"), "example.com", "/status/200");
            assert_eq!(r.status, 200, "{}", r.body_str());
            let seen = up.last();
            assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
            assert_eq!(
                seen.header("x-forwarded-port"),
                Some(tls.to_string().as_str())
            );
            // Kong's router does not match on protocols (transform.lua: only
            // `snis` look at `net.protocol`): an http route serves TLS too.
            let r = https_get(tls, Some("example.com"), "example-clear.com", "/");
            assert_eq!(r.status, 200);
        },
    );
    t.it(
        "allows HTTP requests with x-forwarded-proto (from trusted_ip)",
        || {
            let r = get(
                gw.port,
                "/status/200",
                &[("Host", "example.com"), ("x-forwarded-proto", "https")],
            );
            assert_eq!(r.status, 200);
        },
    );
    t.it(
        "blocks HTTP requests with invalid x-forwarded-proto (from trusted_ip)",
        || {
            let r = get(
                gw.port,
                "/status/200",
                &[("Host", "example.com"), ("x-forwarded-proto", "httpsa")],
            );
            assert_eq!(r.status, 426);
        },
    );

    // Routes' snis (Kong's router: `snis` match the TLS server name).
    t.it(
        "a route with snis matches only the TLS SNI it names",
        || {
            let r = https_get(tls, Some("sni.example.com"), "sni.example.com", "/");
            assert_eq!(r.status, 200, "{}", r.body_str());
            let r = https_get(tls, Some("example.com"), "sni.example.com", "/");
            assert_eq!(r.status, 404, "{}", r.body_str());
            let r = https_get(tls, None, "sni.example.com", "/");
            assert_eq!(r.status, 404, "{}", r.body_str());
        },
    );
    t.it("kong.request.get_scheme() is https over TLS", || {
        let r = https_get(tls, None, "echo.test", "/");
        assert_eq!(r.json()["request"]["scheme"], "https");
        let r = get(gw.port, "/", &[("Host", "echo.test")]);
        assert_eq!(r.json()["request"]["scheme"], "http");
    });

    // Protocols and ALPN (Kong's default: intermediate, TLSv1.2 TLSv1.3).
    t.it("TLSv1.2 and TLSv1.3 are served; TLSv1.1 is refused", || {
        for (v, want) in [
            (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
            (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        ] {
            let opts = TlsOptions {
                versions: vec![v],
                ..TlsOptions::sni("example.com")
            };
            let c = TlsClient::connect(tls, &opts).unwrap();
            assert_eq!(c.version(), Some(want));
        }
        let answer = raw_request(tls, &tls11_client_hello(), Duration::from_secs(5)).unwrap();
        assert_eq!(
            answer.first(),
            Some(&0x15),
            "an alert, not a ServerHello: {answer:?}"
        );
    });
    t.it(
        "ALPN selects http/1.1; a client offering only h2 is refused",
        || {
            let opts = TlsOptions {
                alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
                ..TlsOptions::sni("example.com")
            };
            let c = TlsClient::connect(tls, &opts).unwrap();
            assert_eq!(c.alpn().as_deref(), Some(&b"http/1.1"[..]));
            let none = TlsOptions {
                alpn: vec![],
                ..TlsOptions::sni("example.com")
            };
            assert_eq!(TlsClient::connect(tls, &none).unwrap().alpn(), None);
            let h2 = TlsOptions {
                alpn: vec![b"h2".to_vec()],
                ..TlsOptions::sni("example.com")
            };
            assert!(TlsClient::connect(tls, &h2).is_err());
        },
    );
    t.it("sessions resume (TLSv1.3 and TLSv1.2 tickets)", || {
        for v in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let opts = TlsOptions {
                versions: vec![v],
                ..TlsOptions::sni("example.com")
            };
            let config = opts.config();
            let mut first = TlsClient::connect_with(tls, &opts, &config, b"").unwrap();
            assert!(!first.resumed());
            // Reading a response takes in the TLS 1.3 tickets.
            let r = first.get("example.com", "/", &[]);
            assert_eq!(r.status, 200);
            let second = TlsClient::connect_with(tls, &opts, &config, b"").unwrap();
            assert!(second.resumed(), "{v:?} not resumed");
        }
    });
    t.finish();
}

/// A TLS 1.1-only ClientHello (no supported_versions extension).
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x14, 0xc0, 0x13]); // ECDHE-RSA-AES*-SHA
    body.extend_from_slice(&[0x01, 0x00]); // no compression
    let mut hs = vec![0x01, 0x00];
    hs.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&u16::try_from(hs.len()).unwrap().to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[test]
fn ssl_spec_star_sni_and_untrusted_forwarded_proto() {
    let up = Recorder::start();
    let f = Fixture::new();
    let tls = free_port();
    let yaml = format!(
        r#"_format_version: "3.0"
services:
- name: default-cert
  url: http://{{UP0}}
  routes:
  - protocols: [https]
    hosts: [example.com, ssl1.com]
certificates:
- cert: {cert}
  key: {key}
  snis: [{{name: "*"}}]
"#,
        cert = block(&f.cert.cert_pem),
        key = block(&f.cert.key_pem),
    );
    // No trusted_ips (Kong's "from not trusted_ip" restart).
    let gw = Gateway::start_with(
        &fill_ports(&yaml, &[up.port]),
        &[("KONG_PROXY_LISTEN", &listen(tls))],
    );
    let mut t = Cases::new();
    t.it("sets the default certificate of '*' SNI", || {
        assert_eq!(cn(tls, "example.com").as_deref(), Some("ssl-example.com"));
        assert_eq!(cn(tls, "anything.test").as_deref(), Some("ssl-example.com"));
        // No SNI: Kong serves the default certificate, not the '*' one.
        assert_eq!(
            gw_tests::tls::common_name(&served_cert(tls, None)).as_deref(),
            Some("localhost")
        );
    });
    t.it(
        "blocks HTTP request with HTTPS in x-forwarded-proto",
        || {
            let r = get(
                gw.port,
                "/status/200",
                &[("Host", "ssl1.com"), ("x-forwarded-proto", "https")],
            );
            assert_eq!(r.status, 426);
            // Over TLS, an untrusted client's X-Forwarded-Proto is replaced.
            let mut c = TlsClient::connect(tls, &TlsOptions::sni("ssl1.com")).unwrap();
            let r = c.get("ssl1.com", "/", &[("x-forwarded-proto", "http")]);
            assert_eq!(r.status, 200);
            assert_eq!(up.last().header("x-forwarded-proto"), Some("https"));
        },
    );
    t.finish();
}

#[test]
fn ssl_cert_setting_in_every_form_kong_takes() {
    use base64::Engine;
    let up = Recorder::start();
    let tmp = TempDir::new("ssl-cert");
    let ec = SelfSigned::new("from-file.test", &["from-file.test"]);
    let ed = SelfSigned::with_alg("inline.test", &["inline.test"], &rcgen::PKCS_ED25519);
    let crt = tmp.path().join("c.crt");
    let key = tmp.path().join("c.key");
    std::fs::write(&crt, &ec.cert_pem).unwrap();
    std::fs::write(&key, &ec.key_pem).unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let tls = free_port();
    let yaml = r#"_format_version: "3.0"
services:
- url: http://{UP0}
  routes: [{paths: ["/"]}]
"#;
    // A path (ECDSA) and base64 PEM (Ed25519): both served, by key type.
    let certs = format!("{}, {}", crt.display(), b64(&ed.cert_pem));
    let keys = format!("{}, {}", key.display(), b64(&ed.key_pem));
    let gw = Gateway::start_with(
        &fill_ports(yaml, &[up.port]),
        &[
            ("KONG_PROXY_LISTEN", &listen(tls)),
            ("KONG_SSL_CERT", &certs),
            ("KONG_SSL_CERT_KEY", &keys),
        ],
    );
    let only = |scheme| TlsOptions {
        schemes: Some(vec![scheme]),
        ..TlsOptions::default()
    };
    let c = TlsClient::connect(tls, &only(SignatureScheme::ECDSA_NISTP256_SHA256)).unwrap();
    assert_eq!(c.peer_der(), ec.der);
    let c = TlsClient::connect(tls, &only(SignatureScheme::ED25519)).unwrap();
    assert_eq!(c.peer_der(), ed.der);
    // Nothing generated when ssl_cert is set.
    assert!(!gw.prefix.join("ssl/kong-default-ecdsa.crt").exists());
    drop(gw);

    // Inline PEM, as written.
    let gw = Gateway::start_with(
        &fill_ports(yaml, &[up.port]),
        &[
            ("KONG_PROXY_LISTEN", &listen(tls)),
            ("KONG_SSL_CERT", &ed.cert_pem),
            ("KONG_SSL_CERT_KEY", &ed.key_pem),
        ],
    );
    assert_eq!(served_cert(tls, Some("x.test")), ed.der);
    drop(gw);

    // conf_loader_spec "requires SSL cert and key to exist".
    let err = Gateway::try_start_with(
        &fill_ports(yaml, &[up.port]),
        &[
            ("KONG_PROXY_LISTEN", &listen(free_port())),
            ("KONG_SSL_CERT", "/path/cert.pem"),
            ("KONG_SSL_CERT_KEY", "/path/cert_key.pem"),
        ],
    )
    .err()
    .expect("refused");
    assert!(
        err.contains("ssl_cert: failed loading certificate from /path/cert.pem"),
        "{err}"
    );
}

#[test]
fn certificates_swap_on_reload_and_a_bad_one_is_refused() {
    let up = Recorder::start();
    let tls = free_port();
    let a = SelfSigned::new("a.swap.test", &["swap.test"]);
    let b = SelfSigned::new("b.swap.test", &["swap.test"]);
    let yaml = |c: &SelfSigned, extra: &str| {
        format!(
            r#"_format_version: "3.0"
services:
- url: http://{{UP0}}
  routes: [{{paths: ["/"]}}]
certificates:
- id: 6f0c3d1e-0000-4000-8000-000000000001
  cert: {cert}
  key: {key}
  snis: [{{name: swap.test}}]
{extra}"#,
            cert = SelfSigned::yaml(&c.cert_pem, 4),
            key = SelfSigned::yaml(&c.key_pem, 4),
        )
    };
    let gw = Gateway::start_with(
        &fill_ports(&yaml(&a, ""), &[up.port]),
        &[("KONG_PROXY_LISTEN", &listen(tls))],
    );
    assert_eq!(served_cert(tls, Some("swap.test")), a.der);
    // A connection opened before the swap keeps working.
    let mut before = TlsClient::connect(tls, &TlsOptions::sni("swap.test")).unwrap();
    assert!(gw.reload_and_wait(&fill_ports(&yaml(&b, ""), &[up.port])));
    assert_eq!(served_cert(tls, Some("swap.test")), b.der);
    let r = before.get("swap.test", "/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(before.peer_der(), a.der);

    // A certificate the gateway cannot serve is refused at load, naming
    // the entity and field; the last good config keeps serving.
    let hash = gw.config_hash();
    let vault = r#"- id: 6f0c3d1e-0000-4000-8000-000000000002
  cert: "{vault://env/cert}"
  key: "{vault://env/key}"
"#;
    gw.reload(&fill_ports(&yaml(&b, vault), &[up.port]));
    assert!(gw.proc.wait_for_line(
        "certificate '6f0c3d1e-0000-4000-8000-000000000002': cert: vault references are not supported",
        Duration::from_secs(10)
    ), "{}", gw.output());
    assert_eq!(gw.config_hash(), hash);
    assert_eq!(served_cert(tls, Some("swap.test")), b.der);

    // And at start: config-sync's check of the PEM shape.
    let bad = format!(
        "_format_version: \"3.0\"\ncertificates:\n- cert: \"not a certificate\"\n  key: {}",
        SelfSigned::yaml(&a.key_pem, 4)
    );
    let err = Gateway::try_start_with(&bad, &[("KONG_PROXY_LISTEN", &listen(free_port()))])
        .err()
        .expect("refused");
    assert!(err.contains("invalid certificate"), "{err}");
}

#[test]
fn ssl_protocols_and_cipher_suites() {
    let up = Recorder::start();
    let yaml = fill_ports(
        "_format_version: \"3.0\"\nservices:\n- url: http://{UP0}\n  routes: [{paths: [\"/\"]}]\n",
        &[up.port],
    );
    let only = |v: &'static rustls::SupportedProtocolVersion| TlsOptions {
        versions: vec![v],
        ..TlsOptions::sni("x.test")
    };
    // Kong's `modern`: TLSv1.3 only.
    let tls = free_port();
    let gw = Gateway::start_with(
        &yaml,
        &[
            ("KONG_PROXY_LISTEN", &listen(tls)),
            ("KONG_SSL_CIPHER_SUITE", "modern"),
        ],
    );
    assert!(TlsClient::connect(tls, &only(&rustls::version::TLS13)).is_ok());
    assert!(TlsClient::connect(tls, &only(&rustls::version::TLS12)).is_err());
    drop(gw);
    // `custom` with ssl_protocols TLSv1.2 and one cipher.
    let tls = free_port();
    let gw = Gateway::start_with(
        &yaml,
        &[
            ("KONG_PROXY_LISTEN", &listen(tls)),
            ("KONG_SSL_CIPHER_SUITE", "custom"),
            ("KONG_SSL_PROTOCOLS", "TLSv1.2"),
            (
                "KONG_SSL_CIPHERS",
                "ECDHE-ECDSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256",
            ),
        ],
    );
    assert!(TlsClient::connect(tls, &only(&rustls::version::TLS13)).is_err());
    let c = TlsClient::connect(tls, &only(&rustls::version::TLS12)).unwrap();
    assert_eq!(
        c.stream.conn.negotiated_cipher_suite().map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
    );
    assert!(
        gw.proc.has_line("DHE-RSA-AES128-GCM-SHA256"),
        "{}",
        gw.output()
    );
    drop(gw);
    // Tickets off: TLS 1.2 still resumes by session id (the session cache).
    let tls = free_port();
    let _gw = Gateway::start_with(
        &yaml,
        &[
            ("KONG_PROXY_LISTEN", &listen(tls)),
            ("KONG_SSL_SESSION_TICKETS", "off"),
        ],
    );
    let opts = only(&rustls::version::TLS12);
    let config = opts.config();
    TlsClient::connect_with(tls, &opts, &config, b"").unwrap();
    let again = TlsClient::connect_with(tls, &opts, &config, b"").unwrap();
    assert!(again.resumed());
}

#[test]
fn log_serializer_shows_https_and_request_tls() {
    let up = Recorder::start();
    let tmp = TempDir::new("tls-log");
    let log = tmp.path().join("file.log");
    let tls = free_port();
    let yaml = format!(
        r#"_format_version: "3.0"
services:
- url: http://{{UP0}}
  routes:
  - paths: ["/"]
    plugins:
    - name: file-log
      config: {{path: "{}"}}
"#,
        log.display()
    );
    let gw = Gateway::start_with(
        &fill_ports(&yaml, &[up.port]),
        &[("KONG_PROXY_LISTEN", &listen(tls))],
    );
    let r = https_get(tls, Some("log.test"), "log.test", "/x");
    assert_eq!(r.status, 200);
    let r = get(gw.port, "/y", &[("Host", "log.test")]);
    assert_eq!(r.status, 200);
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if lines.len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    let tls_line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let plain: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(
        tls_line["request"]["url"],
        format!("https://log.test:{tls}/x")
    );
    assert_eq!(tls_line["request"]["tls"]["version"], "TLSv1.3");
    assert_eq!(
        tls_line["request"]["tls"]["cipher"],
        "TLS_AES_256_GCM_SHA384"
    );
    assert_eq!(tls_line["request"]["tls"]["client_verify"], "NONE");
    assert!(plain["request"].get("tls").is_none(), "{plain}");
    assert!(plain["request"]["url"]
        .as_str()
        .unwrap()
        .starts_with("http://"));
}
