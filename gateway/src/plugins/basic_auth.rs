//! The `basic-auth` plugin (Kong's `kong/plugins/basic-auth`): HTTP Basic
//! credentials in `Proxy-Authorization` or `Authorization` against the
//! `basicauth_credentials` rows (password stored as
//! `hex(sha1(password .. consumer_id))`).

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use config_sync::schema::{boolean, string, PluginSchema, Record, PROTOCOLS_HTTP};
use serde::Deserialize;

use super::consumers::{ngx_decode_base64, set_anonymous_consumer, set_consumer, CredentialRef};
use super::{Exit, Instance, Kong, Phases, Plugin, PluginDef, VERSION};

pub const NAME: &str = "basic-auth";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 1100,
    version: VERSION,
    schema,
    build,
};

const TABLE: &str = "basicauth_credentials";

fn schema() -> PluginSchema {
    PluginSchema {
        name: NAME,
        config: Record::new(vec![
            ("anonymous", string().len_min(1)),
            ("hide_credentials", boolean().required().default(false)),
            ("realm", string().len_min(1).required().default("service")),
        ]),
        default_protocols: PROTOCOLS_HTTP,
        allowed_protocols: PROTOCOLS_HTTP,
        no_consumer: true,
        no_route: false,
        no_service: false,
        entity_checks: Vec::new(),
    }
}

/// `config` of a `basic-auth` instance.
#[derive(Debug, Clone, Deserialize)]
struct Config {
    anonymous: Option<String>,
    hide_credentials: bool,
    realm: String,
}

fn build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    let cfg: Config =
        serde_json::from_value(i.config.clone()).map_err(|e| format!("config: {e}"))?;
    let www_authenticate = format!("Basic realm=\"{}\"", cfg.realm);
    Ok(Arc::new(BasicAuth {
        cfg,
        www_authenticate,
    }))
}

struct BasicAuth {
    cfg: Config,
    www_authenticate: String,
}

/// `\s*[Bb]asic\s*(.+)`, searched anywhere in the header (Kong's
/// `ngx.re.gmatch`, first match).
fn basic_re() -> &'static regex::Regex {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"\s*[Bb]asic\s*(.+)").unwrap_or_else(|_| unreachable!()))
}

/// `([^:]+):(.*)` on the decoded bytes (unanchored; `.` stops at a newline).
fn parts_re() -> &'static regex::bytes::Regex {
    static RE: OnceLock<regex::bytes::Regex> = OnceLock::new();
    RE.get_or_init(|| {
        regex::bytes::Regex::new(r"(?-u)([^:]+):(.*)").unwrap_or_else(|_| unreachable!())
    })
}

/// Username and password of a Basic header value, as Kong parses it.
fn parse_basic(header: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let encoded = basic_re().captures(header)?.get(1)?.as_str();
    let decoded = ngx_decode_base64(encoded, false)?;
    let c = parts_re().captures(&decoded)?;
    Some((c.get(1)?.as_bytes().to_vec(), c.get(2)?.as_bytes().to_vec()))
}

#[async_trait]
impl Plugin for BasicAuth {
    fn phases(&self) -> Phases {
        Phases::ACCESS
    }

    async fn access(&self, kong: &mut Kong<'_>) -> Result<(), Exit> {
        if self.cfg.anonymous.is_some() && kong.credential().is_some() {
            // Logical OR with an auth plugin that already succeeded.
            return Ok(());
        }
        if let Err(e) = self.authenticate(kong) {
            match &self.cfg.anonymous {
                Some(anonymous) => set_anonymous_consumer(kong, anonymous)?,
                None => return Err(e),
            }
        }
        Ok(())
    }
}

impl BasicAuth {
    fn unauthorized(&self) -> Exit {
        Exit::error(401, "Unauthorized").header("WWW-Authenticate", self.www_authenticate.clone())
    }

    /// Kong's `retrieve_credentials`: parses the header and, with
    /// `hide_credentials`, clears it (parsed or not).
    fn retrieve(&self, kong: &mut Kong<'_>, name: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        let parsed = kong.header(name).and_then(parse_basic);
        if self.cfg.hide_credentials {
            kong.clear_upstream_header(name);
        }
        parsed
    }

    /// The credential row of `username`, if any.
    fn load(kong: &Kong<'_>, username: &[u8]) -> Option<CredentialRef> {
        let username = std::str::from_utf8(username).ok()?;
        kong.consumers().credential_by(TABLE, username)
    }

    /// Kong's `do_authentication`.
    fn authenticate(&self, kong: &mut Kong<'_>) -> Result<(), Exit> {
        if kong.header("authorization").is_none() && kong.header("proxy-authorization").is_none() {
            return Err(self.unauthorized());
        }
        let mut credential = None;
        let mut given = self.retrieve(kong, "proxy-authorization");
        if let Some((user, _)) = &given {
            credential = Self::load(kong, user);
        }
        if credential.is_none() {
            given = self.retrieve(kong, "authorization");
            match &given {
                Some((user, _)) => credential = Self::load(kong, user),
                None => return Err(self.unauthorized()),
            }
        }
        let (Some(cred), Some((_, password))) = (credential, given) else {
            return Err(self.unauthorized());
        };
        let db = kong.consumers();
        let Some(row) = db.credential(cred) else {
            return Err(self.unauthorized());
        };
        let Some(consumer) = db.get(row.consumer) else {
            return Err(self.unauthorized());
        };
        // The stored password is sha1(password .. consumer_id), hex.
        let digest = {
            let mut salted = password;
            salted.extend_from_slice(consumer.id.to_string().as_bytes());
            hex::encode(ring::digest::digest(
                &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                &salted,
            ))
        };
        if row.str("password") != Some(digest.as_str()) {
            return Err(self.unauthorized());
        }
        let username = row.str("username").unwrap_or_default().to_string();
        let consumer_idx = row.consumer;
        set_consumer(kong, consumer_idx, Some((cred, username)));
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn basic_headers_parse_like_kong() {
        let p = |h: &str| {
            parse_basic(h)
                .map(|(u, p)| (String::from_utf8(u).unwrap(), String::from_utf8(p).unwrap()))
        };
        let ok = |u: &str, pw: &str| Some((u.to_string(), pw.to_string()));
        assert_eq!(
            p("Basic QWxhZGRpbjpPcGVuU2VzYW1l"),
            ok("Aladdin", "OpenSesame")
        );
        assert_eq!(
            p("basic QWxhZGRpbjpPcGVuU2VzYW1l"),
            ok("Aladdin", "OpenSesame")
        );
        // No space needed after the scheme; the password may be empty.
        assert_eq!(p("BasicdXNlcjEyMzo="), ok("user123", ""));
        // "user:pass:word": the password keeps the later colons.
        assert_eq!(p("Basic dXNlcjpwYXNzOndvcmQ="), ok("user", "pass:word"));
        // Not base64 / no colon.
        assert_eq!(p("Basic !!!"), None);
        assert_eq!(p("Basic YWxhZGRpbg=="), None);
        assert_eq!(p("Bearer abc"), None);
    }
}
