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
