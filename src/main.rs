/// mimalloc instead of glibc's allocator. A request allocates and frees dozens of small
/// buffers (headers, JSON, the command, its record) on one thread and the writer frees some of
/// them on another; glibc spent about 18 % of the CPU at 64 clients in `_int_malloc`,
/// `malloc_consolidate` and `_int_free`, and kept each arena's high-water mark resident.
/// Measured side by side with `benches/vs_postgres.sh`-style runs (64 clients, durable
/// triggers): 25.7k → 34.2k commands/s. See ARCHITECTURE.md, Choices.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    reeve::cli::run()
}

/// mimalloc commits each arena it reserves (1 GiB of address space) up front where the
/// kernel overcommits. Opening the history bench's 1M-commit data dir then took 0.64–0.84 s
/// and left 167 MiB resident; with arenas committed as they are used, 0.50–0.55 s and
/// 125 MiB (glibc: 0.61 s, 105 MiB), at the same throughput. The option is read when an arena
/// is reserved, which can happen before `main`, so it is set from a constructor that runs
/// ahead of the unprioritised ones (mimalloc's own among them). An operator's own
/// `MIMALLOC_ARENA_EAGER_COMMIT` wins.
#[cfg(target_os = "linux")]
extern "C" fn lazy_arena_commit() {
    // SAFETY: getenv on a constant C string, before any thread exists; nothing is allocated
    // (the allocator may not have set itself up yet).
    let set_by_operator =
        unsafe { !libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() };
    if !set_by_operator {
        // SAFETY: sets one of mimalloc's options; it is safe to call before mimalloc's own
        // initialisation, which keeps an option that was set explicitly.
        unsafe { libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0) };
    }
}

/// `mi_option_arena_eager_commit` in mimalloc.h (the crate names no constant for it).
#[cfg(target_os = "linux")]
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array.00099")]
static LAZY_ARENA_COMMIT: extern "C" fn() = lazy_arena_commit;
