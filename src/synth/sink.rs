//! Output side of the generator: one buffered NDJSON writer per resource type (`Type.ndjson`),
//! opened lazily, with per-type counts. Memory is one buffer per type, independent of N.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

pub struct Sink {
    dir: PathBuf,
    files: BTreeMap<&'static str, (BufWriter<File>, u64)>,
}

impl Sink {
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create output folder {}", dir.display()))?;
        Ok(Sink {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
        })
    }

    fn writer(&mut self, ty: &'static str) -> anyhow::Result<&mut (BufWriter<File>, u64)> {
        if !self.files.contains_key(ty) {
            let path = self.dir.join(format!("{ty}.ndjson"));
            let f =
                File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
            self.files
                .insert(ty, (BufWriter::with_capacity(256 * 1024, f), 0));
        }
        Ok(self.files.get_mut(ty).expect("just inserted"))
    }

    /// Writes one resource as one line of `Type.ndjson`.
    pub fn put(&mut self, ty: &'static str, resource: &Value) -> anyhow::Result<()> {
        let (w, n) = self.writer(ty)?;
        serde_json::to_writer(&mut *w, resource)?;
        w.write_all(b"\n")?;
        *n += 1;
        Ok(())
    }

    /// Writes an already serialised resource line (no trailing newline) of type `ty`.
    pub fn put_raw(&mut self, ty: &'static str, line: &str) -> anyhow::Result<()> {
        let (w, n) = self.writer(ty)?;
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
        *n += 1;
        Ok(())
    }

    /// Writes one line made of `head`, the bytes of `body` (streamed), and `tail`.
    pub fn put_streamed(
        &mut self,
        ty: &'static str,
        head: &str,
        body: &mut impl std::io::Read,
        tail: &str,
    ) -> anyhow::Result<()> {
        let (w, n) = self.writer(ty)?;
        w.write_all(head.as_bytes())?;
        std::io::copy(body, w)?;
        w.write_all(tail.as_bytes())?;
        w.write_all(b"\n")?;
        *n += 1;
        Ok(())
    }

    /// Flushes every file and returns the (type, count) list sorted by type.
    pub fn finish(self) -> anyhow::Result<Vec<(String, u64)>> {
        let mut counts = Vec::new();
        for (ty, (mut w, n)) in self.files {
            w.flush()
                .with_context(|| format!("cannot write {ty}.ndjson"))?;
            counts.push((ty.to_string(), n));
        }
        Ok(counts)
    }
}
