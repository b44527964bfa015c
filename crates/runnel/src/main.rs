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
            for tick in 1u64.. {
                std::thread::sleep(std::time::Duration::from_secs(2));
                // SAFETY: see above; malloc_trim is thread-safe.
                unsafe {
                    libc::malloc_trim(0);
                }
                // From 20 s in (the pipeline planned, its models loaded), every 30 s:
                // code that ran once since (a restore, a reconnect) goes too.
                if tick >= 10 && tick % 15 == 10 {
                    release_startup_code();
                }
            }
        });
}

/// Much of the binary's code runs once, at start-up: SQL planning (DataFusion,
/// sqlparser), loading and optimising a model (tract), connecting. Its pages stay mapped
/// and count in the resident size (~50 MB of the camera demo's; BENCHMARKS.md, "Memory
/// of the camera demo") although nothing uses them again. This drops the executable's
/// code pages from the process's page tables; the code that keeps running is mapped
/// again from the page cache at its next use (a minor fault per page, once). Breakpoints
/// a debugger or uprobe wrote into the code go with the pages: `RUNNEL_MALLOC_TUNING=off`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_startup_code() {
    let (Ok(maps), Ok(exe)) = (
        std::fs::read_to_string("/proc/self/maps"),
        std::fs::read_link("/proc/self/exe"),
    ) else {
        return;
    };
    let exe = exe.to_string_lossy();
    for line in maps.lines() {
        // start-end perms offset dev inode path
        let mut fields = line.splitn(6, ' ');
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).map(str::trim_start);
        // Only code: read-only data includes relocated pages (RELRO) that must stay.
        if perms != "r-xp" || path != Some(exe.as_ref()) {
            continue;
        }
        let Some((start, end)) = range.split_once('-').and_then(|(a, b)| {
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        }) else {
            continue;
        };
        if end > start {
            // SAFETY: [start, end) is the executable's own code, a read-only private file
            // mapping that nothing writes; MADV_DONTNEED drops only page-table entries,
            // and every page reads back unchanged from the file on its next use.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}
