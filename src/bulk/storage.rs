//! Where finished export files live. Parts are always written to a local spool file first
//! (bounded memory, fsync before the checkpoint that names them), then committed to the
//! backend: the local directory (default; a rename), or, when configured, an S3-compatible
//! object store (see `object.rs`). Reads support byte ranges.

use async_trait::async_trait;
use futures::stream::BoxStream;
use std::path::{Path, PathBuf};

/// A readable byte stream of (part of) a stored file.
pub type ByteStream = BoxStream<'static, std::io::Result<bytes::Bytes>>;

/// Storage backend for finished export files, keyed by job id and file name.
#[async_trait]
pub trait FileStorage: Send + Sync + 'static {
    /// Moves the finished spool file `spool` into storage as `job/name` (replacing any
    /// earlier attempt of the same part).
    async fn commit(&self, job: &str, name: &str, spool: &Path) -> anyhow::Result<()>;
    /// The size of `job/name`, if it exists.
    async fn size(&self, job: &str, name: &str) -> anyhow::Result<Option<u64>>;
    /// Bytes `start..end` (end exclusive) of `job/name`.
    async fn read(&self, job: &str, name: &str, start: u64, end: u64)
    -> anyhow::Result<ByteStream>;
    /// Removes every file of `job`.
    async fn remove_job(&self, job: &str) -> anyhow::Result<()>;
}

/// Files under `<export_dir>/files/<job>/<name>`.
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    pub fn new(export_dir: &Path) -> anyhow::Result<Self> {
        let root = export_dir.join("files");
        std::fs::create_dir_all(&root).map_err(|e| {
            anyhow::anyhow!("cannot create the export directory {}: {e}", root.display())
        })?;
        Ok(LocalStorage { root })
    }

    fn path(&self, job: &str, name: &str) -> PathBuf {
        self.root.join(job).join(name)
    }
}

#[async_trait]
impl FileStorage for LocalStorage {
    async fn commit(&self, job: &str, name: &str, spool: &Path) -> anyhow::Result<()> {
        let target = self.path(job, name);
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::rename(spool, &target).await?;
        Ok(())
    }

    async fn size(&self, job: &str, name: &str) -> anyhow::Result<Option<u64>> {
        match tokio::fs::metadata(self.path(job, name)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read(
        &self,
        job: &str,
        name: &str,
        start: u64,
        end: u64,
    ) -> anyhow::Result<ByteStream> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = tokio::fs::File::open(self.path(job, name)).await?;
        file.seek(std::io::SeekFrom::Start(start)).await?;
        let reader = file.take(end.saturating_sub(start));
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            reader,
            64 * 1024,
        )))
    }

    async fn remove_job(&self, job: &str) -> anyhow::Result<()> {
        match tokio::fs::remove_dir_all(self.root.join(job)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The storage named by the `storage` setting.
pub fn open(setting: &str, export_dir: &Path) -> anyhow::Result<std::sync::Arc<dyn FileStorage>> {
    if setting.is_empty() || setting == "local" {
        return Ok(std::sync::Arc::new(LocalStorage::new(export_dir)?));
    }
    anyhow::bail!("unsupported export storage {setting:?}: use `local`")
}
