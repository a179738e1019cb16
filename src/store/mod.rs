//! The database: resources with their history and tombstones, search index rows, and the
//! engine-specific connection behind one trait (`db::Database`: SQLite and PostgreSQL).
//!
//! Depends on `fhir`, `search` (extraction at write time, planned SQL at read time) and
//! `identity::AccessContext` (turned into SQL in `access.rs` only). Never on `server`.

pub mod access;
pub mod compartment;
pub mod conditional;
pub mod db;
pub mod everything;
pub mod export;
pub mod lookup;
pub mod postgres;
pub mod prepare;
pub mod read;
pub mod release;
pub mod search;
pub mod sensitivity;
pub mod sqlite;
pub mod write;

use crate::search::Registry;
use std::sync::Arc;

pub use access::{ExportRow, StoredResource, View};
pub use db::{Database, DbOptions, Dialect, SqlValue};
pub use prepare::{IdRule, Prepared};
pub use release::ReleaseSettings;
pub use write::{WriteKind, WriteOp, WriteOutcome, WriteResult};

/// The store: a database plus what is needed to index what goes into it.
#[derive(Clone)]
pub struct Store {
    pub db: Arc<dyn Database>,
    pub registry: Arc<Registry>,
    pub compartment: Arc<compartment::Compartment>,
    pub sensitivity: Arc<sensitivity::SensitivityLabels>,
    /// The release rules' server-wide settings (`store::release`); set by the server from
    /// its configuration, defaults elsewhere.
    pub release: ReleaseSettings,
}

impl Store {
    /// Opens (and, if `migrate`, migrates) the database at `url`.
    pub async fn open(
        url: &str,
        sensitivity: sensitivity::SensitivityLabels,
        migrate: bool,
    ) -> anyhow::Result<Store> {
        Self::open_with(url, sensitivity, migrate, db::DbOptions::default()).await
    }

    /// [`Store::open`] with connection settings (the server's bounded acquire timeout).
    pub async fn open_with(
        url: &str,
        sensitivity: sensitivity::SensitivityLabels,
        migrate: bool,
        opts: db::DbOptions,
    ) -> anyhow::Result<Store> {
        let db = db::connect(url, opts).await?;
        if migrate {
            db.migrate().await?;
            release::backfill(db.as_ref()).await?;
        }
        // the R4 write validator is compiled once, here, not on the first write
        crate::fhir::validate::init();
        Ok(Store {
            db,
            registry: Arc::new(Registry::load_builtin()?),
            compartment: Arc::new(compartment::Compartment::load_builtin()?),
            sensitivity: Arc::new(sensitivity),
            release: ReleaseSettings::default(),
        })
    }
}

/// Longest indexed text value, in bytes. Postgres b-tree entries must stay under ~2.7 kB, so
/// values in indexed columns (token system and code, string values, reference ids) are cut
/// to this length when written, and search values the same way when compared: a longer
/// value still matches, on its first 512 bytes.
pub(crate) const MAX_INDEXED_BYTES: usize = 512;

/// `value` cut to [`MAX_INDEXED_BYTES`] on a character boundary.
pub(crate) fn index_key(value: &str) -> String {
    if value.len() <= MAX_INDEXED_BYTES {
        return value.to_owned();
    }
    let mut end = MAX_INDEXED_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

/// `?,?,?` with `n` placeholders.
pub(crate) fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 2);
    for i in 0..n {
        s.push_str(if i == 0 { "?" } else { ",?" });
    }
    s
}
