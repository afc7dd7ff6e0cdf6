//! Consumers and their credentials, compiled into the snapshot for the auth
//! plugins (Kong's `consumers`, `keyauth_credentials`, `basicauth_credentials`,
//! `jwt_secrets`, `hmacauth_credentials`, `acls` entities).

use std::collections::HashMap;

use config_sync::credentials::{parse_jwt_public_key, JwtPublicKey};
use config_sync::model::DeclarativeConfig;
use serde_json::{Map, Value};
use uuid::Uuid;

/// A consumer as plugins see it.
#[derive(Debug, Clone)]
pub struct ConsumerRt {
    pub id: Uuid,
    pub username: Option<String>,
    pub custom_id: Option<String>,
    pub tags: Vec<String>,
}

/// One credential row of a plugin's DAO table.
#[derive(Debug, Clone)]
pub struct CredentialRt {
    pub id: Uuid,
    /// Index into [`ConsumerDb::consumers`].
    pub consumer: u32,
    /// The columns as validated (without `id` and `consumer`).
    pub fields: Map<String, Value>,
}

impl CredentialRt {
    pub fn str(&self, field: &str) -> Option<&str> {
        self.fields.get(field).and_then(Value::as_str)
    }

    /// A `ttl` credential (key-auth) is gone once its `ttl`, an absolute
    /// epoch second in a declarative payload, is reached: Kong's off
    /// strategy hides a row whose `ttl - ngx.time()` is not positive.
    pub fn expired(&self, now_secs: u64) -> bool {
        self.fields
            .get("ttl")
            .and_then(Value::as_f64)
            .is_some_and(|ttl| ttl - now_secs as f64 <= 0.0)
    }
}

/// Seconds since the epoch (`ngx.time()`).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Which credential identified the request (`kong.client.get_credential()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialRef {
    /// DAO table, e.g. `keyauth_credentials`.
    pub table: &'static str,
    /// Index into that table's rows.
    pub index: u32,
}

/// Credential lookups plugins use: (table, unique field).
const INDEXED: &[(&str, &str)] = &[
    ("keyauth_credentials", "key"),
    ("basicauth_credentials", "username"),
    ("jwt_secrets", "key"),
    ("hmacauth_credentials", "username"),
];

/// The consumers of one snapshot, with lookups by id, username and
/// credential.
#[derive(Debug, Default)]
pub struct ConsumerDb {
    pub consumers: Vec<ConsumerRt>,
    by_id: HashMap<Uuid, u32>,
    by_username: HashMap<String, u32>,
    /// Rows per DAO table, in config order.
    tables: HashMap<String, Vec<CredentialRt>>,
    /// (table, unique field value) -> row.
    index: HashMap<(&'static str, String), u32>,
    /// ACL groups per consumer, in config order.
    groups: Vec<Vec<String>>,
    /// Parsed `rsa_public_key` of `jwt_secrets` rows (by row), parsed once
    /// per config; `Err` when it does not load.
    jwt_keys: HashMap<u32, Result<JwtPublicKey, String>>,
}

impl ConsumerDb {
    pub fn compile(cfg: &DeclarativeConfig) -> ConsumerDb {
        let mut db = ConsumerDb::default();
        for c in &cfg.consumers {
            let i = db.consumers.len() as u32;
            db.by_id.insert(c.id, i);
            if let Some(u) = &c.username {
                db.by_username.insert(u.clone(), i);
            }
            db.consumers.push(ConsumerRt {
                id: c.id,
                username: c.username.clone(),
                custom_id: c.custom_id.clone(),
                tags: c.tags.clone(),
            });
            db.groups.push(Vec::new());
        }
        for cred in &cfg.credentials {
            let Some(&consumer) = db.by_id.get(&cred.consumer) else {
                continue;
            };
            if cred.kind == "acls" {
                if let Some(g) = cred.fields.get("group").and_then(Value::as_str) {
                    db.groups[consumer as usize].push(g.to_string());
                }
            }
            let rows = db.tables.entry(cred.kind.clone()).or_default();
            let row = rows.len() as u32;
            rows.push(CredentialRt {
                id: cred.id,
                consumer,
                fields: cred.fields.clone(),
            });
            if cred.kind == "jwt_secrets" {
                if let Some(pem) = cred.fields.get("rsa_public_key").and_then(Value::as_str) {
                    db.jwt_keys.insert(row, parse_jwt_public_key(pem));
                }
            }
            for (table, field) in INDEXED {
                if *table == cred.kind {
                    if let Some(v) = cred.fields.get(*field).and_then(Value::as_str) {
                        db.index.insert((*table, v.to_string()), row);
                    }
                }
            }
        }
        db
    }

    pub fn get(&self, index: u32) -> Option<&ConsumerRt> {
        self.consumers.get(index as usize)
    }

    pub fn by_id(&self, id: &Uuid) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    pub fn by_username(&self, username: &str) -> Option<u32> {
        self.by_username.get(username).copied()
    }

    /// Kong's `kong.client.load_consumer(value, true)`: a UUID is tried as
    /// an id first, then the value as a username (never a custom_id).
    pub fn load(&self, id_or_username: &str) -> Option<u32> {
        if let Ok(id) = Uuid::parse_str(id_or_username) {
            if let Some(i) = self.by_id(&id) {
                return Some(i);
            }
        }
        self.by_username(id_or_username)
    }

    /// A credential by its table's unique field (`key` of a key-auth
    /// credential, `username` of a basic-auth one, ...).
    pub fn credential_by(&self, table: &'static str, value: &str) -> Option<CredentialRef> {
        self.index
            .get(&(table, value.to_string()))
            .map(|&index| CredentialRef { table, index })
    }

    pub fn credential(&self, r: CredentialRef) -> Option<&CredentialRt> {
        self.tables.get(r.table)?.get(r.index as usize)
    }

    /// Every row of a credential table.
    pub fn table(&self, table: &str) -> &[CredentialRt] {
        self.tables
            .get(table)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// A `jwt_secrets` row's public key, if it has one.
    pub fn jwt_public_key(&self, r: CredentialRef) -> Option<&Result<JwtPublicKey, String>> {
        if r.table != "jwt_secrets" {
            return None;
        }
        self.jwt_keys.get(&r.index)
    }

    /// The consumer's ACL groups.
    pub fn groups(&self, consumer: u32) -> &[String] {
        self.groups
            .get(consumer as usize)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------
// Steps every auth plugin shares (Kong repeats them in each handler).

/// Kong's `constants.HEADERS` the auth plugins set upstream.
pub const HEADER_CONSUMER_ID: &str = "X-Consumer-ID";
pub const HEADER_CONSUMER_CUSTOM_ID: &str = "X-Consumer-Custom-ID";
pub const HEADER_CONSUMER_USERNAME: &str = "X-Consumer-Username";
pub const HEADER_CREDENTIAL_IDENTIFIER: &str = "X-Credential-Identifier";
pub const HEADER_ANONYMOUS: &str = "X-Anonymous-Consumer";

/// An auth plugin's `set_consumer(consumer, credential)`:
/// `kong.client.authenticate`, then the consumer headers upstream, each set
/// or cleared. `identifier` is the credential column the plugin reports
/// (`X-Credential-Identifier`); `None` for the anonymous consumer.
pub fn set_consumer(
    kong: &mut super::Kong<'_>,
    consumer: u32,
    credential: Option<(CredentialRef, String)>,
) {
    kong.authenticate(Some(consumer), credential.as_ref().map(|(r, _)| *r));
    let (id, custom_id, username) = match kong.consumers().get(consumer) {
        Some(c) => (
            Some(c.id.to_string()),
            c.custom_id.clone(),
            c.username.clone(),
        ),
        None => (None, None, None),
    };
    for (name, value) in [
        (HEADER_CONSUMER_ID, id),
        (HEADER_CONSUMER_CUSTOM_ID, custom_id),
        (HEADER_CONSUMER_USERNAME, username),
        (
            HEADER_CREDENTIAL_IDENTIFIER,
            credential.as_ref().map(|(_, i)| i.clone()),
        ),
    ] {
        match value {
            Some(v) => kong.set_upstream_header(name, &v),
            None => kong.clear_upstream_header(name),
        }
    }
    if credential.is_some() {
        kong.clear_upstream_header(HEADER_ANONYMOUS);
    } else {
        kong.set_upstream_header(HEADER_ANONYMOUS, "true");
    }
}

/// The `anonymous` fallback of the auth plugins: the consumer named by id
/// or username becomes the request's consumer, with no credential; 500
/// `anonymous consumer <value> is configured but doesn't exist` (through
/// `kong.response.error`) when there is none.
pub fn set_anonymous_consumer(
    kong: &mut super::Kong<'_>,
    anonymous: &str,
) -> Result<(), super::Exit> {
    match kong.consumers().load(anonymous) {
        Some(c) => {
            set_consumer(kong, c, None);
            Ok(())
        }
        None => {
            let msg = format!("anonymous consumer {anonymous} is configured but doesn't exist");
            log::error!("{msg}");
            Err(super::Exit::error(500, msg))
        }
    }
}

/// nginx's `ngx_decode_base64` / `ngx_decode_base64url`
/// (`ngx.decode_base64`, `ngx.base64.decode_base64url`): input stops at the
/// first `=`, any other byte outside the alphabet fails, and so does a
/// length of 4n+1; padding is not required.
pub fn ngx_decode_base64(s: &str, url: bool) -> Option<Vec<u8>> {
    use base64::engine::{general_purpose, DecodePaddingMode, GeneralPurpose};
    use base64::Engine as _;
    let data = s.split('=').next().unwrap_or_default();
    let ok = |b: u8| {
        b.is_ascii_alphanumeric()
            || if url {
                b == b'-' || b == b'_'
            } else {
                b == b'+' || b == b'/'
            }
    };
    if !data.bytes().all(ok) || data.len() % 4 == 1 {
        return None;
    }
    let config = general_purpose::GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true);
    let alphabet = if url {
        &base64::alphabet::URL_SAFE
    } else {
        &base64::alphabet::STANDARD
    };
    GeneralPurpose::new(alphabet, config).decode(data).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nginx_base64_rules() {
        assert_eq!(
            ngx_decode_base64("QWxhZGRpbjpPcGVuU2VzYW1l", false).unwrap(),
            b"Aladdin:OpenSesame"
        );
        // Padding optional, stops at '=', trailing garbage after it ignored.
        assert_eq!(ngx_decode_base64("YQ", false).unwrap(), b"a");
        assert_eq!(ngx_decode_base64("YQ==xx", false).unwrap(), b"a");
        assert!(ngx_decode_base64("Y", false).is_none());
        assert!(ngx_decode_base64("a b", false).is_none());
        // The url alphabet refuses '+' and '/'.
        assert!(ngx_decode_base64("a+/b", true).is_none());
        assert_eq!(ngx_decode_base64("-_8", true).unwrap(), vec![0xfb, 0xff]);
    }

    #[test]
    fn ttl_is_an_absolute_epoch() {
        let mut fields = Map::new();
        fields.insert("ttl".into(), Value::from(1000));
        let c = CredentialRt {
            id: Uuid::nil(),
            consumer: 0,
            fields,
        };
        assert!(!c.expired(999));
        assert!(c.expired(1000));
        assert!(c.expired(2000));
    }
}
