//! `TestDir` + `RunnelCmd`: run the release binary in a scratch directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory that is removed when the test ends.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    /// A new empty directory.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("creating a temp dir"),
        }
    }

    /// Its path.
    #[allow(dead_code)] // not every test module needs it
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file (creating parent directories).
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("creating parent dir");
        }
        std::fs::write(&p, contents).expect("writing test file");
        p
    }

    /// Reads a file, empty if missing.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Copies every file of `src` into this directory.
    pub fn copy_from(&self, src: &Path) {
        for entry in std::fs::read_dir(src).expect("reading case dir") {
            let entry = entry.expect("dir entry");
            if entry.path().is_file() {
                std::fs::copy(entry.path(), self.dir.path().join(entry.file_name()))
                    .expect("copying case file");
            }
        }
    }

    /// `runnel ARGS…` with this directory as the working directory.
    pub fn runnel(&self, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(args)
            .current_dir(self.dir.path())
            .env("RUNNEL_LOG", "warn")
            .output()
            .expect("running the runnel binary");
        Run::from(out)
    }
}

/// What a finished `runnel` process printed.
#[derive(Debug)]
pub struct Run {
    /// Exit status was 0.
    pub success: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            success: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Panics with both streams unless the run succeeded.
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.success,
            "runnel failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the run failed with `needle` in stderr.
    pub fn assert_err(&self, needle: &str) -> &Self {
        assert!(
            !self.success,
            "runnel should have failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }
}

/// JSON lines of `text` as values, sorted, without blanks: output order
/// across subtasks is not defined, and `12.50` equals `12.5`.
pub fn sorted_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(v) => v.to_string(),
            Err(_) => format!("NOT JSON: {l}"),
        })
        .collect();
    v.sort();
    v
}

/// Held by tests that load the machine hard (the SIGKILL loops) and by tests whose
/// timing they could upset, so the two never overlap.
pub static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`HEAVY`], even if a test holding it panicked.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts `runnel ARGS…` in `dir` `times` times and SIGKILLs each run after a random
/// 0..`spread` beyond `least` (a fixed seed); returns how many runs said `resumed` on
/// stderr.
pub fn kill_at_random_moments(
    dir: &Path,
    args: &[&str],
    times: usize,
    least: std::time::Duration,
    spread: u64,
    resumed: &str,
) -> usize {
    use std::process::Stdio;
    use std::time::Instant;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut count = 0;
    for _ in 0..times {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = least + std::time::Duration::from_millis(seed % spread.max(1));
        let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(args)
            .current_dir(dir)
            .env("RUNNEL_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting runnel");
        let started = Instant::now();
        while started.elapsed() < wait {
            if child.try_wait().expect("try_wait").is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let _ = child.kill(); // SIGKILL
        let out = child.wait_with_output().expect("wait");
        if String::from_utf8_lossy(&out.stderr).contains(resumed) {
            count += 1;
        }
    }
    count
}
