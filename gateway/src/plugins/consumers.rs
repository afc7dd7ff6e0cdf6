//! Consumers and their credentials, compiled into the snapshot for the auth
//! plugins (Kong's `consumers`, `keyauth_credentials`, `basicauth_credentials`,
//! `jwt_secrets`, `hmacauth_credentials`, `acls` entities).

use std::collections::HashMap;

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

    /// The consumer's ACL groups.
    pub fn groups(&self, consumer: u32) -> &[String] {
        self.groups
            .get(consumer as usize)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}
