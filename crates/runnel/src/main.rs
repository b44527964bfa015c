//! `runnel`: real-time stream processing in one binary. Parses the command
//! line, runs the command, and prints errors (the only place `anyhow` lives).

mod cli;
mod cmd;

use clap::Parser;

fn main() -> std::process::ExitCode {
    tune_malloc();
    let cli = cli::Cli::parse();
    init_tracing(cli.verbose);
    runnel_common::tls::install_default_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Operators evaluate expressions recursively; deep (allowed) ones need room.
        .thread_stack_size(16 << 20)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::dispatch(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8) {
    // delta-rs warns "table updated during transaction" whenever two subtasks of a Delta
    // sink commit one checkpoint side by side, which is how it is meant to run (the
    // conflict check then passes: both only append); its real failures come back to the
    // sink as errors.
    let default = match verbose {
        0 => "warn,runnel=info,deltalake_core::kernel::transaction=error",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNNEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// glibc's malloc keeps freed memory in up to 8 arenas per core and rarely gives it back:
/// with image inference allocating tens of MB per frame on several threads, the camera
/// demo held 1 GB resident for ~0.2 GB live (see BENCHMARKS.md, "Memory of the camera
/// demo"). Two arenas, and the free memory handed back every few seconds, keep resident
/// memory nearer what is in use. `RUNNEL_MALLOC_TUNING=off` leaves glibc's defaults.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    // An escape hatch, and the baseline for measuring it.
    if std::env::var_os("RUNNEL_MALLOC_TUNING").is_some_and(|v| v == "off") {
        return;
    }
    // SAFETY: mallopt and malloc_trim only adjust and walk glibc's own allocator state;
    // mallopt runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let _ = std::thread::Builder::new()
        .name("runnel-malloc-trim".into())
        .spawn(|| {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(2));
                // SAFETY: see above; malloc_trim is thread-safe.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        });
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}
