//! Small durable-filesystem helpers: fsync a directory, write a file atomically.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{LogError, Result};

/// fsyncs a directory so that creations, renames and deletions in it survive a crash.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(format!("fsync directory {}", dir.display()), e))
}

/// Replaces `path` with `bytes` atomically and durably: write a temp file, fsync it,
/// rename it over `path`, fsync the directory. A crash leaves either the old or the new file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| LogError::Internal(format!("{} has no parent directory", path.display())))?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(|e| LogError::io(format!("writing {}", tmp.display()), e))?;
    fs::rename(tmp, path).map_err(|e| {
        LogError::io(
            format!("renaming {} to {}", tmp.display(), path.display()),
            e,
        )
    })?;
    fsync_dir(dir)
}

/// Wall-clock time in ms since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Checks a topic or group name: 1 to 200 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub(crate) fn validate_name(kind: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(LogError::InvalidName {
            kind,
            name: name.to_owned(),
        })
    }
}

/// How many more files this process may open (`RLIMIT_NOFILE` minus those open), where
/// the system tells (Linux `/proc`); `None` elsewhere.
pub(crate) fn free_file_descriptors() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    let limit: u64 = match soft {
        "unlimited" => return None,
        n => n.parse().ok()?,
    };
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(limit.saturating_sub(open))
}
