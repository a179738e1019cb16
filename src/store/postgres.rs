//! PostgreSQL implementation of [`Database`]. Portable SQL arrives with `?` placeholders;
//! they are numbered (`$1`, `$2`, …) here. Our SQL never contains a literal `?`.

use super::db::{Database, DbOptions, Dialect, Row, SqlValue, Transaction, classify};
use anyhow::Context;
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Column, Connection as _, Row as _, TypeInfo, ValueRef};
use std::str::FromStr;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

pub struct PostgresDatabase {
    pool: PgPool,
    /// Connections for searches only, with the search statement timeout set on each
    /// (`statement_timeout`: the database itself stops a query at its bound).
    search_pool: PgPool,
    search_timeout: Option<std::time::Duration>,
}

impl PostgresDatabase {
    pub async fn connect(url: &str, opts: DbOptions) -> anyhow::Result<Self> {
        // Each connection is a Postgres process: more connections than about two per core
        // only add scheduling (measured: 16 connections on 2 cores gave a p99 of 0.5 s under
        // load, see BENCHMARKS.md); waiting for a pooled connection queues fairly instead.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let size = std::env::var("PDEX_DB_POOL_SIZE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or((cores * 2).max(4) as u32);
        // Custom plans always: our statements carry id lists whose selectivity decides the
        // plan, and after five executions Postgres may switch a prepared statement to a
        // generic plan that cannot see them — for a Group export's member chunks that plan
        // walks every row of the type per chunk (measured: minutes instead of seconds).
        let options = PgConnectOptions::from_str(url)
            .with_context(|| "PDEX_DATABASE_URL is not a PostgreSQL URL")?
            .options([("plan_cache_mode", "force_custom_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(options.clone())
            .await
            .with_context(|| "cannot connect to PostgreSQL (check PDEX_DATABASE_URL)")?;
        let timeout_ms = opts.search_timeout.map_or(0, |t| t.as_millis().max(1));
        let search_pool = PgPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(opts.acquire_timeout)
            .connect_lazy_with(
                options.options([("statement_timeout", timeout_ms.to_string().as_str())]),
            );
        Ok(PostgresDatabase {
            pool,
            search_pool,
            search_timeout: opts.search_timeout,
        })
    }
}

/// Rewrites `?` placeholders into `$n`.
pub fn number_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// Binds `params` to `sql`, whose placeholders are already numbered.
fn bind<'q>(
    sql: &'q str,
    params: impl IntoIterator<Item = SqlValue>,
) -> sqlx::query::Query<'q, sqlx::Postgres, PgArguments> {
    let mut q = sqlx::query(sql);
    for p in params {
        q = match p {
            SqlValue::Null => q.bind(None::<String>),
            SqlValue::NullInt => q.bind(None::<i64>),
            SqlValue::Int(v) => q.bind(v),
            SqlValue::Real(v) => q.bind(v),
            SqlValue::Text(v) => q.bind(v),
        };
    }
    q
}

fn decode(row: &PgRow) -> anyhow::Result<Row> {
    let mut out = Vec::with_capacity(row.columns().len());
    for (i, column) in row.columns().iter().enumerate() {
        if row.try_get_raw(i)?.is_null() {
            out.push(SqlValue::Null);
            continue;
        }
        let value = match column.type_info().name() {
            "INT8" => SqlValue::Int(row.try_get::<i64, _>(i)?),
            "INT4" => SqlValue::Int(row.try_get::<i32, _>(i)? as i64),
            "INT2" => SqlValue::Int(row.try_get::<i16, _>(i)? as i64),
            "BOOL" => SqlValue::Int(row.try_get::<bool, _>(i)? as i64),
            "FLOAT8" => SqlValue::Real(row.try_get::<f64, _>(i)?),
            "FLOAT4" => SqlValue::Real(row.try_get::<f32, _>(i)? as f64),
            "NUMERIC" => anyhow::bail!(
                "column {i} is NUMERIC, which is not decoded: cast it to BIGINT or DOUBLE PRECISION in the query"
            ),
            _ => SqlValue::Text(row.try_get::<String, _>(i)?),
        };
        out.push(value);
    }
    Ok(Row::new(out))
}

#[async_trait]
impl Database for PostgresDatabase {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .context("PostgreSQL migration failed")
    }

    async fn fetch(&self, sql: &str, params: &[SqlValue]) -> anyhow::Result<Vec<Row>> {
        let sql = number_placeholders(sql);
        let rows = bind(&sql, params.iter().cloned())
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.iter().map(decode).collect()
    }

    async fn fetch_search(&self, sql: &str, params: &[SqlValue]) -> anyhow::Result<Vec<Row>> {
        let sql = number_placeholders(sql);
        let conn = self.search_pool.acquire().await.map_err(classify)?;
        let mut running = CancelOnDrop::new(conn, &self.pool).await?;
        let result = bind(&sql, params.iter().cloned())
            .fetch_all(running.connection())
            .await;
        // it ended, with rows or an error: nothing to cancel
        running.finished();
        let rows = result.map_err(|e| match (&e, self.search_timeout) {
            // 57014 query_canceled: the statement timeout stopped it
            (sqlx::Error::Database(db), Some(bound)) if db.code().as_deref() == Some("57014") => {
                super::db::search_timed_out(bound)
            }
            _ => classify(e),
        })?;
        rows.iter().map(decode).collect()
    }

    fn stream<'a>(
        &'a self,
        sql: String,
        params: Vec<SqlValue>,
    ) -> BoxStream<'a, anyhow::Result<Row>> {
        // A task runs the query and hands rows over a small bounded channel: the caller
        // pulls them one by one and the result is never held in memory as a whole.
        let pool = self.pool.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<anyhow::Result<Row>>(256);
        tokio::spawn(async move {
            let sql = number_placeholders(&sql);
            let mut rows = bind(&sql, params).fetch(&pool);
            while let Some(row) = rows.next().await {
                let item = row.map_err(classify).and_then(|r| decode(&r));
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        });
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    async fn begin(&self) -> anyhow::Result<Box<dyn Transaction>> {
        Ok(Box::new(PostgresTransaction {
            tx: self.pool.begin().await.map_err(classify)?,
        }))
    }

    async fn analyze(&self) -> anyhow::Result<()> {
        sqlx::query(
            "ANALYZE resources, idx_token, idx_string, idx_date, idx_quantity, idx_reference",
        )
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// A search's connection while its query runs. Dropped before [`CancelOnDrop::finished`] —
/// the request's future was dropped because the client went away (issue 15 item 2: the
/// query used to run on until its statement timeout, holding a search connection) — it asks
/// PostgreSQL to cancel the statement (`pg_cancel_backend`, over a connection of the main
/// pool), then drains the answer so that the connection goes back to the pool idle and in
/// step, or closes it. The connection stays out of the pool until then, so the cancel can
/// never reach a later query on it; a cancel that arrives when the statement has already
/// ended finds the backend idle, and PostgreSQL ignores it.
struct CancelOnDrop {
    conn: Option<PoolConnection<sqlx::Postgres>>,
    backend: i32,
    cancel_with: PgPool,
}

/// How long the cancel and the drain after it may take before the connection is closed.
const CANCEL_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

impl CancelOnDrop {
    async fn new(
        mut conn: PoolConnection<sqlx::Postgres>,
        cancel_with: &PgPool,
    ) -> anyhow::Result<Self> {
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await
            .map_err(classify)?;
        Ok(CancelOnDrop {
            conn: Some(conn),
            backend,
            cancel_with: cancel_with.clone(),
        })
    }

    fn connection(&mut self) -> &mut sqlx::PgConnection {
        self.conn
            .as_mut()
            .expect("present until finished or dropped")
    }

    /// The query ended (with rows or an error): the connection goes back as usual.
    fn finished(mut self) {
        self.conn.take();
    }
}

/// Reads the cancelled statement's answer, within [`CANCEL_BOUND`]: a ping fails on its error
/// (57014), the next one reads on to the ReadyForQuery messages. True: the connection is idle
/// and in step.
async fn drain(conn: &mut PoolConnection<sqlx::Postgres>) -> bool {
    let pings = async {
        for _ in 0..3 {
            if conn.ping().await.is_ok() {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(CANCEL_BOUND, pings).await == Ok(true)
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime: the pool closes the connection
        };
        let (backend, pool) = (self.backend, self.cancel_with.clone());
        runtime.spawn(async move {
            let cancel = sqlx::query("SELECT pg_cancel_backend($1)")
                .bind(backend)
                .execute(&pool);
            let cancelled = matches!(tokio::time::timeout(CANCEL_BOUND, cancel).await, Ok(Ok(_)));
            let drained = cancelled && drain(&mut conn).await;
            if drained {
                tracing::debug!(backend, "search cancelled: its client went away");
            } else {
                tracing::warn!(backend, "a cancelled search's connection is closed");
                conn.close_on_drop();
            }
        });
    }
}

struct PostgresTransaction {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
}

#[async_trait]
impl Transaction for PostgresTransaction {
    async fn fetch(&mut self, sql: &str, params: Vec<SqlValue>) -> anyhow::Result<Vec<Row>> {
        let sql = number_placeholders(sql);
        let rows = bind(&sql, params)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(classify)?;
        rows.iter().map(decode).collect()
    }
    async fn execute(&mut self, sql: &str, params: Vec<SqlValue>) -> anyhow::Result<u64> {
        let sql = number_placeholders(sql);
        Ok(bind(&sql, params)
            .execute(&mut *self.tx)
            .await
            .map_err(classify)?
            .rows_affected())
    }
    async fn commit(self: Box<Self>) -> anyhow::Result<()> {
        self.tx.commit().await.map_err(classify)
    }

    async fn lock(&mut self, key: i64) -> anyhow::Result<()> {
        // a transaction-level advisory lock: released at commit or rollback
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn insert_rows(
        &mut self,
        target: &str,
        width: usize,
        values: Vec<SqlValue>,
    ) -> anyhow::Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let mut copy = self
            .tx
            .copy_in_raw(&format!("COPY {target} FROM STDIN"))
            .await
            .map_err(classify)?;
        let mut buf = Vec::with_capacity(1 << 20);
        for (i, v) in values.iter().enumerate() {
            if i % width != 0 {
                buf.push(b'\t');
            }
            copy_text(&mut buf, v);
            if i % width == width - 1 {
                buf.push(b'\n');
            }
            if buf.len() >= 1 << 20 {
                copy.send(std::mem::take(&mut buf))
                    .await
                    .map_err(classify)?;
            }
        }
        if !buf.is_empty() {
            copy.send(buf).await.map_err(classify)?;
        }
        copy.finish().await.map_err(classify)?;
        Ok(())
    }
}

/// One value in COPY text format: `\N` for NULL; backslash, tab, newline and carriage return
/// escaped.
fn copy_text(buf: &mut Vec<u8>, v: &SqlValue) {
    match v {
        SqlValue::Null | SqlValue::NullInt => buf.extend_from_slice(b"\\N"),
        SqlValue::Int(i) => buf.extend_from_slice(i.to_string().as_bytes()),
        SqlValue::Real(f) => buf.extend_from_slice(f.to_string().as_bytes()),
        SqlValue::Text(t) => {
            for &b in t.as_bytes() {
                match b {
                    b'\\' => buf.extend_from_slice(b"\\\\"),
                    b'\t' => buf.extend_from_slice(b"\\t"),
                    b'\n' => buf.extend_from_slice(b"\\n"),
                    b'\r' => buf.extend_from_slice(b"\\r"),
                    _ => buf.push(b),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes() {
        let mut buf = Vec::new();
        copy_text(&mut buf, &SqlValue::Text("a\tb\\c\nd".into()));
        assert_eq!(buf, b"a\\tb\\\\c\\nd");
        buf.clear();
        copy_text(&mut buf, &SqlValue::Null);
        assert_eq!(buf, b"\\N");
    }
}
