fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    reeve::cli::run()
}

/// glibc gives each thread that contends for the allocator an arena of its own, up to eight per
/// core, and memory freed in one arena is not reused by another: a server whose request
/// threads come and go ends up holding the high-water mark of each. Measured with
/// `cargo bench --bench history` at 1M commits, 60 s of load: 280 MiB resident with glibc's
/// default, 244 MiB with two arenas per core, 212 MiB with one (at least two). Durable
/// commands at 64 clients (`benches/vs_postgres.sh`) showed no difference beyond this
/// machine's noise. Set before any thread exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // An operator's own MALLOC_ARENA_MAX wins.
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
