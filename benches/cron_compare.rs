//! The alternative the scheduler was measured against: one tokio-cron-scheduler job per watch.
//!
//! `cargo bench --bench cron_compare` adds REEVE_BENCH_WATCHES (default 10,000) repeated jobs
//! every 3 s, each recording how late it ran against its fixed-rate schedule, for 20 s; then
//! the same number every 10 hours, measuring the process's CPU over 10 idle seconds. The
//! callbacks only record the time: a real fire would add a commit on top.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

async fn scheduler_with(n: usize, every: Duration, late: Arc<Mutex<Vec<i64>>>) -> JobScheduler {
    let sched = JobScheduler::new().await.expect("scheduler");
    for _ in 0..n {
        let late = late.clone();
        let added = Instant::now();
        let mut fired = 0u32;
        let job = Job::new_repeated_async(every, move |_id, _lock| {
            fired += 1;
            let due = added + every * fired;
            let late = late.clone();
            Box::pin(async move {
                let ms = Instant::now().saturating_duration_since(due).as_millis() as i64;
                late.lock().push(ms);
            })
        })
        .expect("job");
        sched.add(job).await.expect("add");
    }
    sched.start().await.expect("start");
    sched
}

fn main() {
    let n: usize = std::env::var("REEVE_BENCH_WATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let late = Arc::new(Mutex::new(Vec::new()));
        let mut sched = scheduler_with(n, Duration::from_secs(3), late.clone()).await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        let _ = sched.shutdown().await;
        let mut late = late.lock().clone();
        late.sort_unstable();
        let pct = |p: f64| late.get(((late.len().max(1) - 1) as f64 * p) as usize).copied().unwrap_or(0);
        println!(
            "tokio-cron-scheduler/{n} jobs every 3 s for 20 s: {} runs (fixed rate would be {}), lateness p50 {} ms, p99 {} ms, max {} ms",
            late.len(),
            n * 6,
            pct(0.5),
            pct(0.99),
            late.last().copied().unwrap_or(0)
        );

        let idle = Arc::new(Mutex::new(Vec::new()));
        let mut sched = scheduler_with(n, Duration::from_secs(36_000), idle).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = cpu_seconds();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let used = cpu_seconds() - before;
        println!(
            "tokio-cron-scheduler/{n} idle jobs: {:.1} ms CPU per second ({:.2}% of one core)",
            used * 100.0,
            used * 10.0
        );
        let _ = sched.shutdown().await;
    });
}
