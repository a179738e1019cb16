//! Rebuilds the crate when a file embedded by `src/demo.rs` changes: `include_dir!` cannot
//! tell cargo which files it read on stable Rust, so the folders are named here.

fn main() {
    for dir in ["fixtures/demo", "fixtures/demo-clients", "examples"] {
        println!("cargo:rerun-if-changed={dir}");
    }
}
