fn main() -> std::process::ExitCode {
    reeve::cli::run()
}
