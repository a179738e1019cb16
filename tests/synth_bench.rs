//! Generation-rate measurement for `pdex synth` (not a timed assertion: it prints numbers for
//! BENCHMARKS.md). Run in release:
//! `PDEX_SYNTH_BENCH_MEMBERS=100000 cargo test --release --test synth_bench -- --ignored --nocapture`

use std::time::Instant;

use pdex::synth::{SynthOptions, run};

#[test]
#[ignore = "measurement; run explicitly in release"]
fn measure_generation_rate() {
    let members: u64 = std::env::var("PDEX_SYNTH_BENCH_MEMBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let summary = run(&SynthOptions {
        members,
        seed: 42,
        out: dir.path().to_path_buf(),
        start_year: 2016,
        sensitive_share: 0.1,
    })
    .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let total: u64 = summary.counts.iter().map(|(_, n)| n).sum();
    let bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!(
        "members={members} seconds={secs:.2} members/minute={:.0} resources={total} resources/second={:.0} bytes={bytes}",
        members as f64 * 60.0 / secs,
        total as f64 / secs
    );
    println!("type\tcount\tper_member");
    for (ty, n) in &summary.counts {
        println!("{ty}\t{n}\t{:.2}", *n as f64 / members as f64);
    }
    println!(
        "households={} sensitive_members={} opted_out_members={}",
        summary.households, summary.sensitive_members, summary.opted_out_members
    );
}
