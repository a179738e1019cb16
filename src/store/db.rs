//! The database seam: one small trait (`Database`) with two implementations, SQLite
//! (`sqlite.rs`) and PostgreSQL (`postgres.rs`). Everything above it — resources, history,
//! index rows, search — is written once in portable SQL with `?` placeholders and
//! [`SqlValue`] parameters; the Postgres implementation numbers the placeholders.

use async_trait::async_trait;
use futures::stream::BoxStream;

/// A bound parameter or a column value.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    /// A NULL bound for an integer column: PostgreSQL types a statement's parameters when
    /// it first prepares it, so a NULL bound as text would make later integers fail.
    NullInt,
    Int(i64),
    Real(f64),
    Text(String),
}

impl SqlValue {
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            SqlValue::Int(v) => Some(*v),
            SqlValue::Real(v) => Some(*v as i64),
            SqlValue::Text(s) => s.parse().ok(),
            SqlValue::Null | SqlValue::NullInt => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            SqlValue::Text(s) => Some(s),
            _ => None,
        }
    }
    pub fn into_string(self) -> Option<String> {
        match self {
            SqlValue::Text(s) => Some(s),
            SqlValue::Int(v) => Some(v.to_string()),
            SqlValue::Real(v) => Some(v.to_string()),
            SqlValue::Null | SqlValue::NullInt => None,
        }
    }

    /// An integer, or an integer-typed NULL ([`SqlValue::NullInt`]).
    pub fn int_or_null(v: Option<i64>) -> SqlValue {
        v.map_or(SqlValue::NullInt, SqlValue::Int)
    }
}

impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        SqlValue::Text(v.to_owned())
    }
}
impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        SqlValue::Text(v)
    }
}
impl From<&String> for SqlValue {
    fn from(v: &String) -> Self {
        SqlValue::Text(v.clone())
    }
}
impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        SqlValue::Int(v)
    }
}
impl From<bool> for SqlValue {
    fn from(v: bool) -> Self {
        SqlValue::Int(v as i64)
    }
}
impl From<f64> for SqlValue {
    fn from(v: f64) -> Self {
        SqlValue::Real(v)
    }
}
impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map(Into::into).unwrap_or(SqlValue::Null)
    }
}

/// One result row, columns in select order.
pub type Row = Vec<SqlValue>;

/// Which SQL engine is behind a [`Database`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Largest number of bind parameters we put in one statement (SQLite allows 32,766,
/// Postgres 65,535).
pub const MAX_PARAMS: usize = 30_000;

/// A sqlx error as ours: one that says the database cannot be reached now — no connection
/// within the acquire timeout, a broken or refused connection, a server shutting down or
/// starting up (SQLSTATE class 08, 57P01–57P03, 53300 too many connections) — is marked
/// [`crate::fhir::Unavailable`] (503 with `Retry-After` to clients); anything else stays as it is.
pub fn classify(e: sqlx::Error) -> anyhow::Error {
    let unavailable = match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    };
    if unavailable {
        anyhow::Error::new(crate::fhir::Unavailable(Box::new(e)))
    } else {
        anyhow::Error::from(e)
    }
}

/// How long a request waits for a pooled connection before it is answered 503
/// (`db_acquire_timeout_seconds`; the server's default).
pub const DEFAULT_ACQUIRE_TIMEOUT_SECONDS: u64 = 5;

/// Connection settings.
#[derive(Debug, Clone, Copy)]
pub struct DbOptions {
    /// The longest wait for a pooled connection. The server bounds it tightly (a request
    /// waits at most this long, then gets 503); CLI commands such as `pdex import`, whose own
    /// batches queue for SQLite's one writer, keep sqlx's 30 s.
    pub acquire_timeout: std::time::Duration,
    /// The longest a search query may run ([`Database::fetch_search`]); `None`: unbounded.
    pub search_timeout: Option<std::time::Duration>,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            acquire_timeout: std::time::Duration::from_secs(30),
            search_timeout: None,
        }
    }
}

/// The error of a search query stopped at its bound.
pub fn search_timed_out(bound: std::time::Duration) -> anyhow::Error {
    anyhow::Error::new(crate::fhir::TimedOut(format!(
        "the search ran longer than {} seconds and was cancelled",
        bound.as_secs()
    )))
}

/// A connection pool to one database.
#[async_trait]
pub trait Database: Send + Sync + 'static {
    fn dialect(&self) -> Dialect;
    /// Applies the embedded migrations for this engine.
    async fn migrate(&self) -> anyhow::Result<()>;
    async fn fetch(&self, sql: &str, params: &[SqlValue]) -> anyhow::Result<Vec<Row>>;
    /// A search query: bounded by the search timeout (stopped in the database, then
    /// [`crate::fhir::TimedOut`]), and on connections of its own, so that expensive searches
    /// can never take the connections that token checks, writes and exports need.
    async fn fetch_search(&self, sql: &str, params: &[SqlValue]) -> anyhow::Result<Vec<Row>>;
    /// Streams rows without buffering the whole result (exports).
    fn stream<'a>(
        &'a self,
        sql: String,
        params: Vec<SqlValue>,
    ) -> BoxStream<'a, anyhow::Result<Row>>;
    /// Starts a write transaction (on SQLite an immediate one, so writers queue instead of
    /// failing on lock upgrade).
    async fn begin(&self) -> anyhow::Result<Box<dyn Transaction>>;
    /// Refreshes the planner's statistics (after bulk loads: a table that grew from empty
    /// would otherwise be planned as if it were tiny).
    async fn analyze(&self) -> anyhow::Result<()>;
    async fn close(&self);
}

/// An open transaction; dropped without `commit` it rolls back.
#[async_trait]
pub trait Transaction: Send {
    async fn fetch(&mut self, sql: &str, params: Vec<SqlValue>) -> anyhow::Result<Vec<Row>>;
    async fn execute(&mut self, sql: &str, params: Vec<SqlValue>) -> anyhow::Result<u64>;
    async fn commit(self: Box<Self>) -> anyhow::Result<()>;

    /// Takes an exclusive lock on `key` held until the transaction ends, serialising the
    /// transactions that take it (conditional create). SQLite needs none: its write
    /// transactions are immediate, so writers already run one at a time.
    async fn lock(&mut self, _key: i64) -> anyhow::Result<()> {
        Ok(())
    }

    /// Bulk-inserts rows of `width` values into `target` (`table (col, …)`): multi-row
    /// INSERTs by default; PostgreSQL streams them with COPY.
    async fn insert_rows(
        &mut self,
        target: &str,
        width: usize,
        values: Vec<SqlValue>,
    ) -> anyhow::Result<()> {
        let rows_per_stmt = MAX_PARAMS / width;
        let row = format!("({})", vec!["?"; width].join(","));
        let mut values = values.into_iter();
        loop {
            let chunk: Vec<SqlValue> = values.by_ref().take(rows_per_stmt * width).collect();
            if chunk.is_empty() {
                return Ok(());
            }
            let n = chunk.len() / width;
            let sql = format!(
                "INSERT INTO {target} VALUES {}",
                vec![row.as_str(); n].join(",")
            );
            self.execute(&sql, chunk).await?;
        }
    }
}

/// Opens the database named by `url` (`sqlite://…` or `postgres://…`).
pub async fn connect(url: &str, opts: DbOptions) -> anyhow::Result<std::sync::Arc<dyn Database>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(
            super::postgres::PostgresDatabase::connect(url, opts).await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(
            super::sqlite::SqliteDatabase::connect(url, opts).await?,
        ))
    } else {
        anyhow::bail!(
            "unsupported database URL {url:?}: use sqlite://PATH or postgres://USER@HOST/DB"
        )
    }
}
