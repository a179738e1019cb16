//! SQLite implementation of [`Database`]: WAL journal, a busy timeout so that a concurrent
//! `pdex import` and `pdex serve` queue rather than fail, one writer connection (SQLite has a
//! single writer anyway) and a small pool of readers.

use super::db::{Database, DbOptions, Dialect, Row, SqlValue, Transaction, classify};
use anyhow::Context;
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Row as _, TypeInfo, ValueRef};
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

pub struct SqliteDatabase {
    readers: SqlitePool,
    writer: SqlitePool,
    search_timeout: Option<Duration>,
}

impl SqliteDatabase {
    pub async fn connect(url: &str, opts: DbOptions) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("invalid SQLite URL {url:?}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            // 64 MiB page cache per connection; index b-trees stay in memory during imports
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory")
            .foreign_keys(false);
        if let Some(dir) = std::path::Path::new(options.get_filename()).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("cannot open SQLite database {url:?}"))?;
        let readers = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(options.read_only(false))
            .await
            .map_err(classify)?;
        Ok(SqliteDatabase {
            readers,
            writer,
            search_timeout: opts.search_timeout,
        })
    }
}

fn bind<'q>(
    sql: &'q str,
    params: impl IntoIterator<Item = SqlValue>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, SqliteArguments<'q>> {
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

fn decode(row: &SqliteRow) -> anyhow::Result<Row> {
    let mut out = Vec::with_capacity(row.columns().len());
    for i in 0..row.columns().len() {
        let raw = row.try_get_raw(i)?;
        if raw.is_null() {
            out.push(SqlValue::Null);
            continue;
        }
        let value = match raw.type_info().name() {
            "INTEGER" | "BOOLEAN" | "INT8" | "BIGINT" => SqlValue::Int(row.try_get::<i64, _>(i)?),
            "REAL" => SqlValue::Real(row.try_get::<f64, _>(i)?),
            _ => SqlValue::Text(row.try_get::<String, _>(i)?),
        };
        out.push(value);
    }
    Ok(Row::new(out))
}

#[async_trait]
impl Database for SqliteDatabase {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR
            .run(&self.writer)
            .await
            .context("SQLite migration failed")
    }

    async fn fetch(&self, sql: &str, params: &[SqlValue]) -> anyhow::Result<Vec<Row>> {
        let rows = bind(sql, params.iter().cloned())
            .fetch_all(&self.readers)
            .await
            .map_err(classify)?;
        rows.iter().map(decode).collect()
    }

    /// SQLite cannot stop a statement from outside, so the bound is the caller's wait: the
    /// client is answered at the bound, the reader finishes on its own thread.
    async fn fetch_search(&self, sql: &str, params: &[SqlValue]) -> anyhow::Result<Vec<Row>> {
        match self.search_timeout {
            None => self.fetch(sql, params).await,
            Some(bound) => tokio::time::timeout(bound, self.fetch(sql, params))
                .await
                .map_err(|_| super::db::search_timed_out(bound))?,
        }
    }

    fn stream<'a>(
        &'a self,
        sql: String,
        params: Vec<SqlValue>,
    ) -> BoxStream<'a, anyhow::Result<Row>> {
        // A task runs the query and hands rows over a small bounded channel: the caller
        // pulls them one by one and the result is never held in memory as a whole.
        let pool = self.readers.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<anyhow::Result<Row>>(256);
        tokio::spawn(async move {
            let sql = sql;
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
        let tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        Ok(Box::new(SqliteTransaction { tx }))
    }

    async fn analyze(&self) -> anyhow::Result<()> {
        sqlx::query("PRAGMA optimize=0x10002")
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn close(&self) {
        self.writer.close().await;
        self.readers.close().await;
    }
}

struct SqliteTransaction {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
}

#[async_trait]
impl Transaction for SqliteTransaction {
    async fn fetch(&mut self, sql: &str, params: Vec<SqlValue>) -> anyhow::Result<Vec<Row>> {
        let rows = bind(sql, params)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(classify)?;
        rows.iter().map(decode).collect()
    }
    async fn execute(&mut self, sql: &str, params: Vec<SqlValue>) -> anyhow::Result<u64> {
        Ok(bind(sql, params)
            .execute(&mut *self.tx)
            .await
            .map_err(classify)?
            .rows_affected())
    }
    async fn commit(self: Box<Self>) -> anyhow::Result<()> {
        self.tx.commit().await.map_err(classify)
    }
}
