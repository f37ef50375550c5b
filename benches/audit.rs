//! The audit tool on a large log: `reeve audit verify` and `reeve audit replay --digest`, the
//! real binary, on a data dir of REEVE_BENCH_COMMITS commits (default 1,000,000).
//!
//! The log is the mix of `benches/common/mix.rs` (shared with `benches/history.rs`): watches
//! created, paused and resumed, manual triggers, builds with three-job pipelines and refusals,
//! written through `Control::submit`.
//!
//! `cargo bench --bench audit` prints the times; it is not a criterion bench because one run
//! of each command over a million commits is the figure wanted.

#[path = "common/mix.rs"]
mod mix;

use std::process::Command as Process;
use std::time::Instant;

fn main() {
    let total: u64 = std::env::var("REEVE_BENCH_COMMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let secs = mix::write(dir.path(), total);
    println!(
        "wrote {total} commits in {secs:.1} s ({})",
        dir.path().display()
    );
    let reeve = env!("CARGO_BIN_EXE_reeve");
    for args in [vec!["audit", "verify"], vec!["audit", "replay", "--digest"]] {
        let started = Instant::now();
        let out = Process::new(reeve)
            .args(&args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .expect("run reeve");
        let secs = started.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "reeve {}: {secs:.2} s ({:.0} commits/s)\n{}",
            args.join(" "),
            total as f64 / secs,
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
}
