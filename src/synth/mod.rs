//! Deterministic synthetic payer data (`pdex synth`). INTERFACE (to be implemented).

use std::path::PathBuf;

/// What `pdex synth` was asked for.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub members: u64,
    pub seed: u64,
    pub out: PathBuf,
    pub start_year: i32,
    /// Share of members (0.0–1.0) that have sensitive data.
    pub sensitive_share: f64,
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct SynthSummary {
    /// (resource type, count), sorted by type.
    pub counts: Vec<(String, u64)>,
}

/// Writes the data set to `opts.out`.
pub fn run(opts: &SynthOptions) -> anyhow::Result<SynthSummary> {
    let _ = opts;
    unimplemented!()
}
