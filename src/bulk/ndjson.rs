//! NDJSON part writing: lines appended to a spool file through a fixed-size buffer (memory
//! stays bounded whatever the export's size), fsynced when the part is finished, so that the
//! checkpoint recording it never names bytes that are not on disk.

use std::path::{Path, PathBuf};
use tokio::io::{AsyncWriteExt, BufWriter};

/// Buffer between rows and the file.
const BUFFER: usize = 256 * 1024;

/// One part being written.
pub struct PartWriter {
    path: PathBuf,
    out: BufWriter<tokio::fs::File>,
    pub bytes: u64,
    pub count: u64,
}

impl PartWriter {
    /// Creates (or truncates: a part redone after a restart starts over) `path`.
    pub async fn create(path: &Path) -> anyhow::Result<PartWriter> {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let file = tokio::fs::File::create(path).await?;
        Ok(PartWriter {
            path: path.to_owned(),
            out: BufWriter::with_capacity(BUFFER, file),
            bytes: 0,
            count: 0,
        })
    }

    /// Appends one resource; `json` must be a single line (stored JSON is compact).
    pub async fn write_line(&mut self, json: &str) -> anyhow::Result<()> {
        self.out.write_all(json.as_bytes()).await?;
        self.out.write_all(b"\n").await?;
        self.bytes += json.len() as u64 + 1;
        self.count += 1;
        Ok(())
    }

    /// Flushes and fsyncs; returns the spool path with the byte and line counts.
    pub async fn finish(mut self) -> anyhow::Result<(PathBuf, u64, u64)> {
        self.out.flush().await?;
        let file = self.out.into_inner();
        file.sync_all().await?;
        Ok((self.path, self.bytes, self.count))
    }
}
