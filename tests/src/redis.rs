//! A private `redis-server` for the tests of the plugins' redis policies,
//! and a raw RESP client to look at what they wrote.
//!
//! [`RedisServer::start`] runs Debian's `redis-server` on a free loopback
//! port in a temp dir (no persistence), waits until it answers `PING`, and
//! kills it by PID on drop; [`RedisServer::stop`] and
//! [`RedisServer::restart`] take it down and bring it back on the same port
//! (empty: nothing is saved). [`RedisServer::cmd`] sends one command.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::gateway::TempDir;
use crate::{free_port, skip, Proc, Skip};

/// A reply, as RESP2 gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Vec<Reply>),
}

impl Reply {
    pub fn int(&self) -> i64 {
        match self {
            Reply::Int(n) => *n,
            Reply::Bulk(Some(s)) => s.parse().unwrap_or_else(|_| panic!("not a number: {s}")),
            other => panic!("not an integer reply: {other:?}"),
        }
    }

    pub fn strings(&self) -> Vec<String> {
        match self {
            Reply::Array(items) => items
                .iter()
                .filter_map(|r| match r {
                    Reply::Bulk(Some(s)) | Reply::Status(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            other => panic!("not an array reply: {other:?}"),
        }
    }
}

/// A `redis-server` of this test only.
pub struct RedisServer {
    /// The plain port (the raw client's).
    pub port: u16,
    /// With [`RedisServer::start_tls`]: the TLS port, and the CA file that
    /// issued its certificate (for `localhost`).
    pub tls: Option<(u16, PathBuf)>,
    proc: Option<Proc>,
    dir: TempDir,
}

/// Whether Debian's `redis-server` is installed (scripts/setup installs it).
pub fn redis_server_installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

impl RedisServer {
    /// Starts one, or reports the skip (a failure under CI) and returns
    /// `None` when `redis-server` is not installed.
    pub fn start(test: &str) -> Option<RedisServer> {
        if !redis_server_installed() {
            skip(
                test,
                Skip::Missing,
                "redis-server is not installed (scripts/setup installs it)",
            );
            return None;
        }
        let mut r = RedisServer {
            port: free_port(),
            tls: None,
            proc: None,
            dir: TempDir::new("redis"),
        };
        r.restart();
        Some(r)
    }

    /// Like [`RedisServer::start`], also serving TLS on a port of its own
    /// with a certificate for `localhost` from a CA of this test (clients'
    /// certificates not asked for).
    pub fn start_tls(test: &str) -> Option<RedisServer> {
        if !redis_server_installed() {
            return RedisServer::start(test);
        }
        let dir = TempDir::new("redis");
        let ca_key = rcgen::KeyPair::generate().expect("keygen");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Test Redis CA");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).expect("self-sign CA");
        let key = rcgen::KeyPair::generate().expect("keygen");
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .signed_by(&key, &ca_cert, &ca_key)
            .expect("issue");
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
            p
        };
        let ca_file = write("ca.crt", &ca_cert.pem());
        write("redis.crt", &leaf.pem());
        write("redis.key", &key.serialize_pem());
        let mut r = RedisServer {
            port: free_port(),
            tls: Some((free_port(), ca_file)),
            proc: None,
            dir,
        };
        r.restart();
        Some(r)
    }

    /// Starts it (again) on its port, empty, and waits for `PING`.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut cmd = Command::new("redis-server");
            cmd.args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(self.dir.path());
            if let Some((tls_port, _)) = &self.tls {
                let file = |name: &str| self.dir.path().join(name);
                cmd.arg("--tls-port")
                    .arg(tls_port.to_string())
                    .arg("--tls-cert-file")
                    .arg(file("redis.crt"))
                    .arg("--tls-key-file")
                    .arg(file("redis.key"))
                    .args(["--tls-auth-clients", "no"]);
            }
            let mut proc = Proc::spawn(cmd);
            while Instant::now() < deadline && proc.is_running() {
                if self.try_cmd(&["PING"]).ok() == Some(Reply::Status("PONG".into())) {
                    self.proc = Some(proc);
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            // The port may still be held by the previous process: retry.
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING on {}; output:\n{}",
                self.port,
                proc.output()
            );
            proc.kill();
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills it (SIGKILL): clients see their connections drop.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Sends one command; panics on an I/O error.
    pub fn cmd(&self, args: &[&str]) -> Reply {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// `SELECT db` then one command, on one connection.
    pub fn cmd_in(&self, db: u32, args: &[&str]) -> Reply {
        let mut s = self
            .connect()
            .unwrap_or_else(|e| panic!("redis connect: {e}"));
        let _ = send(&mut s, &["SELECT", &db.to_string()]);
        send(&mut s, args).unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    pub fn try_cmd(&self, args: &[&str]) -> std::io::Result<Reply> {
        let mut s = self.connect()?;
        send(&mut s, args)
    }

    fn connect(&self) -> std::io::Result<BufReader<TcpStream>> {
        let s = TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(2),
        )?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(BufReader::new(s))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn send(s: &mut BufReader<TcpStream>, args: &[&str]) -> std::io::Result<Reply> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.get_mut().write_all(req.as_bytes())?;
    read_reply(s)
}

fn read_reply(s: &mut BufReader<TcpStream>) -> std::io::Result<Reply> {
    let mut line = String::new();
    s.read_line(&mut line)?;
    let line = line.trim_end_matches("\r\n");
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, line.to_string());
    let (kind, rest) = (line.get(..1).ok_or_else(bad)?, &line[1..]);
    Ok(match kind {
        "+" => Reply::Status(rest.into()),
        "-" => Reply::Error(rest.into()),
        ":" => Reply::Int(rest.parse().map_err(|_| bad())?),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0u8; n as usize + 2];
                s.read_exact(&mut buf)?;
                buf.truncate(n as usize);
                Reply::Bulk(Some(String::from_utf8_lossy(&buf).into_owned()))
            }
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(s)?);
            }
            Reply::Array(items)
        }
        _ => return Err(bad()),
    })
}
