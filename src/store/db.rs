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

/// One result row, columns in select order, read by typed accessors that fail loudly: a
/// NULL where a value is required, a value of another type, or a column past the end is an
/// error naming the column — never a default (issue 12: a `disabled` flag that failed to
/// decode used to read as "enabled").
#[derive(Debug, Clone, PartialEq)]
pub struct Row(Vec<SqlValue>);

impl Row {
    pub fn new(values: Vec<SqlValue>) -> Row {
        Row(values)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The raw values, for code that carries a row on unchanged (keyset cursors).
    pub fn into_values(self) -> Vec<SqlValue> {
        self.0
    }
    /// The first `at` columns as a row of their own, and the rest as raw values (a search
    /// page row: the resource columns, then the keyset position).
    pub fn split(self, at: usize) -> anyhow::Result<(Row, Vec<SqlValue>)> {
        anyhow::ensure!(
            at <= self.0.len(),
            "cannot split a {}-column row at column {at}",
            self.0.len()
        );
        let mut head = self.0;
        let tail = head.split_off(at);
        Ok((Row(head), tail))
    }
    /// Column `i` as it came from the database.
    pub fn value(&self, i: usize) -> anyhow::Result<&SqlValue> {
        self.0.get(i).ok_or_else(|| {
            anyhow::anyhow!(
                "column {i} is past the end of a {}-column row",
                self.0.len()
            )
        })
    }
    /// A text column that must not be NULL.
    pub fn text(&self, i: usize) -> anyhow::Result<String> {
        self.opt_text(i)?
            .ok_or_else(|| anyhow::anyhow!("column {i} is NULL where text is required"))
    }
    /// A nullable text column.
    pub fn opt_text(&self, i: usize) -> anyhow::Result<Option<String>> {
        match self.value(i)? {
            SqlValue::Text(s) => Ok(Some(s.clone())),
            SqlValue::Null | SqlValue::NullInt => Ok(None),
            other => anyhow::bail!("column {i} is {other:?} where text is expected"),
        }
    }
    /// An integer column that must not be NULL.
    pub fn int(&self, i: usize) -> anyhow::Result<i64> {
        self.opt_int(i)?
            .ok_or_else(|| anyhow::anyhow!("column {i} is NULL where an integer is required"))
    }
    /// A nullable integer column.
    pub fn opt_int(&self, i: usize) -> anyhow::Result<Option<i64>> {
        match self.value(i)? {
            SqlValue::Int(v) => Ok(Some(*v)),
            SqlValue::Null | SqlValue::NullInt => Ok(None),
            other => anyhow::bail!("column {i} is {other:?} where an integer is expected"),
        }
    }
    /// A 0/1 flag column (INTEGER on SQLite, BOOLEAN or INTEGER on PostgreSQL); NULL and any
    /// other value are errors.
    pub fn flag(&self, i: usize) -> anyhow::Result<bool> {
        match self.int(i)? {
            0 => Ok(false),
            1 => Ok(true),
            n => anyhow::bail!("column {i} is {n} where a 0/1 flag is expected"),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::{Row, SqlValue};

    #[test]
    fn typed_accessors_fail_loudly_instead_of_defaulting() {
        let row = Row::new(vec![
            SqlValue::Text("a".into()),
            SqlValue::Int(1),
            SqlValue::Null,
            SqlValue::Int(7),
            SqlValue::Real(1.5),
        ]);
        assert_eq!(row.text(0).unwrap(), "a");
        assert!(row.flag(1).unwrap());
        assert_eq!(row.opt_text(2).unwrap(), None);
        assert_eq!(row.opt_int(2).unwrap(), None);
        // NULL where a value is required, the wrong type, a flag that is not 0/1, a column
        // past the end: errors, never "", 0 or false
        assert!(row.text(2).is_err());
        assert!(row.int(2).is_err());
        assert!(row.flag(2).is_err());
        assert!(row.int(0).is_err());
        assert!(row.text(1).is_err());
        assert!(row.flag(3).is_err());
        assert!(row.opt_int(4).is_err());
        assert!(row.text(5).is_err());
        let (head, tail) = row.clone().split(2).unwrap();
        assert_eq!(head.len(), 2);
        assert_eq!(tail.len(), 3);
        assert!(row.split(6).is_err());
    }
}
