//! The S3-compatible storage backend (`storage = "s3://bucket/prefix"`), through the
//! `object_store` crate. Credentials, region and endpoint come from the standard AWS
//! environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT` for S3-compatible servers such as MinIO, `AWS_ALLOW_HTTP=true` for a plain
//! HTTP endpoint). Finished parts are uploaded from their spool file in 8 MiB multipart
//! chunks, so memory stays bounded; downloads are still served (and authorised) by pdex.

use super::storage::{ByteStream, FileStorage};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};
use std::path::Path;
use tokio::io::AsyncReadExt;

const CHUNK: usize = 8 * 1024 * 1024;

pub struct ObjectStorage {
    store: Box<dyn ObjectStore>,
    prefix: String,
}

impl ObjectStorage {
    /// `s3://bucket/optional/prefix`.
    pub fn s3(url: &str) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|e| anyhow::anyhow!("export storage {url:?} is not a URL: {e}"))?;
        let bucket = parsed
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("export storage {url:?} names no bucket"))?;
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot configure S3 storage {url:?}: {e}"))?;
        Ok(ObjectStorage {
            store: Box::new(store),
            prefix: parsed.path().trim_matches('/').to_owned(),
        })
    }

    fn path(&self, job: &str, name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(format!("{job}/{name}"))
        } else {
            ObjectPath::from(format!("{}/{job}/{name}", self.prefix))
        }
    }

    fn job_prefix(&self, job: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(job)
        } else {
            ObjectPath::from(format!("{}/{job}", self.prefix))
        }
    }
}

#[async_trait]
impl FileStorage for ObjectStorage {
    async fn commit(&self, job: &str, name: &str, spool: &Path) -> anyhow::Result<()> {
        let upload = self.store.put_multipart(&self.path(job, name)).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK);
        let mut file = tokio::fs::File::open(spool).await?;
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(2).await?;
            writer.write(&buf[..n]);
        }
        writer.finish().await?;
        tokio::fs::remove_file(spool).await?;
        Ok(())
    }

    async fn size(&self, job: &str, name: &str) -> anyhow::Result<Option<u64>> {
        match self.store.head(&self.path(job, name)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
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
        if start >= end {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let result = self
            .store
            .get_opts(
                &self.path(job, name),
                GetOptions {
                    range: Some(GetRange::Bounded(start..end)),
                    ..Default::default()
                },
            )
            .await?;
        Ok(result.into_stream().map_err(std::io::Error::other).boxed())
    }

    async fn remove_job(&self, job: &str) -> anyhow::Result<()> {
        let prefix = self.job_prefix(job);
        let mut objects = self.store.list(Some(&prefix));
        while let Some(meta) = objects.next().await {
            self.store.delete(&meta?.location).await?;
        }
        Ok(())
    }
}
