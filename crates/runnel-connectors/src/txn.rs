//! The one transactional-sink mechanism: exactly-once output on top of checkpoints.
//!
//! A sink subtask's rows go through four steps:
//!
//! 1. **stage** — [`Staging::write`] appends the sink's encoded rows to a hidden
//!    in-progress file (`<prefix><subtask>.inprogress`), so memory stays bounded;
//! 2. **seal** (pre-commit, at checkpoint `n`'s barrier) — [`Staging::seal`] fsyncs it and
//!    renames it to `<prefix><subtask>-<n>.sealed`, then fsyncs the directory: from here
//!    on the batch survives a crash;
//! 3. **apply** (commit, once checkpoint `n` is complete) — [`Staging::commit`] hands each
//!    sealed batch up to `n`, oldest first, to the sink's [`Apply`] step, then deletes it;
//! 4. **recover** (at restart from checkpoint `r`) — [`recover`] applies the sealed
//!    batches of checkpoints up to `r` (their checkpoint completed, but the commit may not
//!    have run or finished), deletes everything later or in progress (those rows are
//!    produced again from the restored positions), and lets the sink drop output of
//!    checkpoints after `r` ([`Apply::discard_after`]).
//!
//! When checkpoints live in an object store, the machine that sealed a batch may be gone
//! for good by the time its checkpoint is restored (a distributed task taken over by
//! another member, a pipeline moved to a new machine). A [`SealedStore`] beside the
//! checkpoints then keeps a copy of every sealed batch from seal until apply: the seal
//! uploads it before the sink acknowledges the barrier, so a complete checkpoint always
//! has its batches there, and [`recover_with`] fetches the ones missing locally.
//!
//! A distributed task's staging directory can be seen by two members at once: its new
//! owner, and the member that lost it and has not noticed yet (a zombie, until its next
//! checkpoint fails to publish). Each owner's run is an *attempt* whose id is in its
//! staged and sealed files' names ([`Resume`]): a commit applies only its own attempt's
//! batches, and recovery only those of the attempt that published the restored
//! checkpoint, so nothing a zombie stages or seals is ever applied.
//!
//! A sink therefore implements only [`Apply`]: "make this sealed batch visible, exactly
//! once, even if called again after a crash part-way through". A crash can happen
//! between any two steps; the `RUNNEL_FAIL_AT` phases `before-seal`, `after-seal`,
//! `mid-apply` (inside a sink's apply) and `after-apply` exercise each one.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use runnel_common::fault::crash_point;

use crate::ConnectorError;

/// The id of the batch sealed when the input ends (after the final checkpoint).
pub const FINAL: u64 = u64::MAX;

/// One sealed batch: whose and which checkpoint's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    /// The sink subtask that staged it.
    pub subtask: usize,
    /// The checkpoint it belongs to ([`FINAL`] for rows after the last checkpoint).
    pub checkpoint: u64,
}

/// The step an exactly-once sink implements.
///
/// The mechanism calls it from a blocking thread, one call at a time per table, in
/// checkpoint order per subtask.
pub trait Apply: Send + Sync + 'static {
    /// Makes the rows of `sealed` (the bytes the sink staged for `txn`) visible in the
    /// external system, exactly once: when called again for the same `txn` after a crash
    /// part-way through, it must finish the job without repeating what was done.
    ///
    /// # Errors
    /// The external system refused or could not be reached; the pipeline stops and the
    /// batch stays sealed, to be applied at the next start.
    fn apply(&self, txn: &Txn, sealed: &Path) -> Result<(), ConnectorError>;

    /// Whether `txn` is fully applied already, so recovery can skip it. `apply` must be
    /// idempotent regardless; the default asks it to check.
    fn applied(&self, _txn: &Txn) -> Result<bool, ConnectorError> {
        Ok(false)
    }

    /// A restart from `restored` (`None`: from scratch): drop output of later checkpoints
    /// if the external system can (the rows are produced again). Default: nothing.
    fn discard_after(&self, _restored: Option<u64>) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// Copies of sealed batches kept with the checkpoints (in the object store that holds
/// them), scoped to one sink table. Names are the sealed files' names.
///
/// Calls block the calling thread until the store answers.
pub trait SealedStore: std::fmt::Debug + Send + Sync + 'static {
    /// Stores the sealed batch at `from` as `name`, durably.
    ///
    /// # Errors
    /// The file cannot be read or the store refuses.
    fn put(&self, name: &str, from: &Path) -> Result<(), ConnectorError>;

    /// Writes the stored batch `name` to `to` (durably).
    ///
    /// # Errors
    /// The store cannot be read or the file written.
    fn get(&self, name: &str, to: &Path) -> Result<(), ConnectorError>;

    /// The names of the stored batches.
    ///
    /// # Errors
    /// The store cannot be listed.
    fn list(&self) -> Result<Vec<String>, ConnectorError>;

    /// Deletes the stored batch `name` (nothing if it is not there).
    ///
    /// # Errors
    /// The store refuses.
    fn delete(&self, name: &str) -> Result<(), ConnectorError>;
}

fn io(ctx: String) -> impl FnOnce(std::io::Error) -> ConnectorError {
    move |e| ConnectorError::io(ctx, e)
}

fn sync_dir(dir: &Path) -> Result<(), ConnectorError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("fsync directory '{}'", dir.display())))
}

/// Where a run resumes: the checkpoint, and the attempt that published it.
///
/// An *attempt* is one owner's run of a distributed task (see
/// [`crate::CheckpointMode::attempt`]): its staged and sealed files carry its id, so a
/// member that lost the task (a zombie still finishing its last checkpoint) never stages
/// into, seals over, or has applied for it, the files of the task's next owner. A
/// single-process run has no attempt id, and its files' names have none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resume {
    /// The checkpoint restored (`None`: from scratch).
    pub checkpoint: Option<u64>,
    /// The attempt that published it: only its sealed batches are applied.
    pub attempt: Option<u64>,
}

impl From<Option<u64>> for Resume {
    fn from(checkpoint: Option<u64>) -> Self {
        Resume {
            checkpoint,
            attempt: None,
        }
    }
}

impl From<crate::CheckpointMode> for Resume {
    fn from(mode: crate::CheckpointMode) -> Self {
        Resume {
            checkpoint: mode.restored,
            attempt: mode.restored_attempt,
        }
    }
}

/// The attempt id of an owner token (FNV-1a, the same on every machine).
pub fn attempt_of(token: &str) -> u64 {
    token.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Sealed batch file name: `<prefix><subtask>-<checkpoint, 20 digits>.sealed`, with
/// `-<attempt, 16 hex digits>` before `.sealed` in a distributed task.
fn sealed_name(prefix: &str, subtask: usize, checkpoint: u64, attempt: Option<u64>) -> String {
    match attempt {
        None => format!("{prefix}{subtask}-{checkpoint:020}.sealed"),
        Some(a) => format!("{prefix}{subtask}-{checkpoint:020}-{a:016x}.sealed"),
    }
}

/// The subtask, checkpoint and attempt of a sealed file's name.
fn parse_sealed(prefix: &str, name: &str) -> Option<(Txn, Option<u64>)> {
    let rest = name.strip_prefix(prefix)?.strip_suffix(".sealed")?;
    let mut parts = rest.split('-');
    let txn = Txn {
        subtask: parts.next()?.parse().ok()?,
        checkpoint: parts.next()?.parse().ok()?,
    };
    let attempt = match parts.next() {
        None => None,
        Some(a) => Some(u64::from_str_radix(a, 16).ok()?),
    };
    parts.next().is_none().then_some((txn, attempt))
}

/// A sealed batch found in a staging directory.
struct Found {
    txn: Txn,
    attempt: Option<u64>,
    path: PathBuf,
}

/// Sealed batches in `dir`, oldest checkpoint first.
fn sealed_in(dir: &Path, prefix: &str) -> Result<Vec<Found>, ConnectorError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(ConnectorError::io(
                format!("reading '{}'", dir.display()),
                e,
            ));
        }
    };
    for e in entries {
        let e = e.map_err(io(format!("reading '{}'", dir.display())))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((txn, attempt)) = parse_sealed(prefix, &name) {
            out.push(Found {
                txn,
                attempt,
                path: e.path(),
            });
        }
    }
    out.sort_by_key(|f| (f.txn.checkpoint, f.txn.subtask));
    Ok(out)
}

/// Restart after checkpoint `restored` (`None`: from scratch), for every subtask of the
/// table staging in `dir` with `prefix`: applies sealed batches of checkpoints up to
/// `restored` (those of the attempt that published it), deletes later ones, other
/// attempts' and in-progress files, then lets the sink drop later output. Call once per
/// table, before its subtasks start.
///
/// # Errors
/// The directory cannot be read or changed, or an apply fails.
pub fn recover(
    dir: &Path,
    prefix: &str,
    apply: &dyn Apply,
    restored: impl Into<Resume>,
) -> Result<(), ConnectorError> {
    recover_with(dir, prefix, apply, restored, None)
}

/// [`recover`], with the copies in `mirror`: a batch of a restored checkpoint that is
/// not on this machine is fetched from there first; copies of later checkpoints are
/// deleted.
///
/// # Errors
/// As [`recover`], or the store cannot be read or changed.
pub fn recover_with(
    dir: &Path,
    prefix: &str,
    apply: &dyn Apply,
    restored: impl Into<Resume>,
    mirror: Option<&dyn SealedStore>,
) -> Result<(), ConnectorError> {
    let Resume {
        checkpoint: restored,
        attempt: publisher,
    } = restored.into();
    // A batch of the restored history: of a checkpoint up to the restored one, sealed by
    // the attempt that published it. (The batches of earlier owners were applied when
    // that attempt recovered; any other is a zombie's, never part of a checkpoint.)
    let keep = |txn: &Txn, attempt: Option<u64>| {
        restored.is_some_and(|r| txn.checkpoint <= r) && attempt == publisher
    };
    std::fs::create_dir_all(dir).map_err(io(format!("creating '{}'", dir.display())))?;
    if let Some(mirror) = mirror {
        let mut fetched = 0;
        let names = mirror.list()?;
        for name in &names {
            if let Some(batch) = name.strip_suffix(".progress")
                && parse_sealed(prefix, batch).is_some()
                && !names.iter().any(|n| n == batch)
            {
                mirror.delete(name)?; // its batch was applied and deleted
            }
            let Some((txn, attempt)) = parse_sealed(prefix, name) else {
                continue;
            };
            let local = dir.join(name);
            if !keep(&txn, attempt) {
                mirror.delete(name)?;
                if names.contains(&progress_copy(name)) {
                    mirror.delete(&progress_copy(name))?;
                }
            } else if !local.exists() {
                // The apply progress first: a batch here without it is a first attempt.
                if names.contains(&progress_copy(name)) {
                    mirror.get(&progress_copy(name), &progress_path(&local))?;
                }
                mirror.get(name, &local)?;
                fetched += 1;
            }
        }
        if fetched > 0 {
            sync_dir(dir)?;
            tracing::info!(dir = %dir.display(), batches = fetched,
                "fetched sealed batches of the restored checkpoint kept with the checkpoints");
        }
    }
    for f in sealed_in(dir, prefix)? {
        if keep(&f.txn, f.attempt) && !apply.applied(&f.txn)? {
            apply.apply(&f.txn, &f.path)?;
        }
        unmirror(mirror, &f.path)?;
        remove_sealed(&f.path)?;
    }
    let entries = std::fs::read_dir(dir).map_err(io(format!("reading '{}'", dir.display())))?;
    for e in entries {
        let e = e.map_err(io(format!("reading '{}'", dir.display())))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let orphan = name.ends_with(".progress") && !dir.join(&name[..name.len() - 9]).exists();
        if name.starts_with(prefix) && (name.ends_with(".inprogress") || orphan) {
            remove_if_exists(&e.path())?;
        }
    }
    apply.discard_after(restored)?;
    sync_dir(dir)
}

/// Deletes the copy of the sealed batch at `path`, and of its apply progress, if there
/// is a store.
fn unmirror(mirror: Option<&dyn SealedStore>, path: &Path) -> Result<(), ConnectorError> {
    match (mirror, path.file_name()) {
        (Some(m), Some(name)) => {
            let name = name.to_string_lossy();
            m.delete(&name)?;
            // Only an apply that keeps progress has a copy of it (a crash between the two
            // leaves an orphan, which the next recovery deletes).
            if progress_path(path).exists() {
                m.delete(&progress_copy(&name))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The name under which an [`Apply`] step keeps a copy of its progress on sealed batch
/// `sealed` (a file name) in a [`SealedStore`]: the machine that takes the batch over
/// needs it as much as the batch (see [`progress_path`]).
pub fn progress_copy(sealed: &str) -> String {
    format!("{sealed}.progress")
}

/// `<pipeline>/<table>/<task>/`: how a sink whose external system records what was
/// applied (a bookkeeping row, message ids) names a subtask's batches (append the
/// subtask), the same on every machine that may run the task.
pub fn commit_prefix(first: &crate::SinkContext, safe_table: &str) -> String {
    let pipeline = first.pipeline.as_deref().unwrap_or("runnel");
    let task = first
        .task
        .map_or_else(|| "single".to_string(), |t| t.to_string());
    format!("{pipeline}/{safe_table}/{task}/")
}

/// Where an [`Apply`] step may keep its progress on the sealed batch at `sealed`; it is
/// deleted with the batch.
pub fn progress_path(sealed: &Path) -> PathBuf {
    let mut name = sealed.as_os_str().to_owned();
    name.push(".progress");
    PathBuf::from(name)
}

/// Deletes a sealed batch and its apply progress.
fn remove_sealed(path: &Path) -> Result<(), ConnectorError> {
    remove_if_exists(path)?;
    remove_if_exists(&progress_path(path))
}

/// Removes `path`; one that is already gone is no error.
pub(crate) fn remove_if_exists(path: &Path) -> Result<(), ConnectorError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ConnectorError::io(
            format!("removing '{}'", path.display()),
            e,
        )),
    }
}

/// One sink subtask's staging area.
pub struct Staging {
    dir: PathBuf,
    prefix: String,
    subtask: usize,
    header: Vec<u8>,
    apply: Arc<dyn Apply>,
    mirror: Option<Arc<dyn SealedStore>>,
    /// This run's attempt id (a distributed task's), in its files' names.
    attempt: Option<u64>,
    current: Option<BufWriter<File>>,
}

impl Staging {
    /// Staging for `subtask` in `dir` (already recovered), file names starting with
    /// `prefix`; every staged file starts with `header` (e.g. a CSV header row).
    pub fn new(
        dir: PathBuf,
        prefix: &str,
        subtask: usize,
        header: Vec<u8>,
        apply: Arc<dyn Apply>,
    ) -> Self {
        Staging {
            dir,
            prefix: prefix.to_string(),
            subtask,
            header,
            apply,
            mirror: None,
            attempt: None,
            current: None,
        }
    }

    /// Names this run's files after its attempt (see [`Resume`]); `None` for a
    /// single-process run.
    #[must_use]
    pub fn with_attempt(mut self, attempt: Option<u64>) -> Self {
        self.attempt = attempt;
        self
    }

    /// Keeps a copy of every sealed batch in `mirror` until it is applied.
    #[must_use]
    pub fn with_mirror(mut self, mirror: Option<Arc<dyn SealedStore>>) -> Self {
        self.mirror = mirror;
        self
    }

    fn inprogress(&self) -> PathBuf {
        let name = match self.attempt {
            None => format!("{}{}.inprogress", self.prefix, self.subtask),
            Some(a) => format!("{}{}-{a:016x}.inprogress", self.prefix, self.subtask),
        };
        self.dir.join(name)
    }

    fn sealed(&self, checkpoint: u64) -> String {
        sealed_name(&self.prefix, self.subtask, checkpoint, self.attempt)
    }

    /// Stage: appends encoded rows to the open batch (opened on first use).
    ///
    /// # Errors
    /// The staging file cannot be created or written.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ConnectorError> {
        if self.current.is_none() {
            let p = self.inprogress();
            let f = File::create(&p).map_err(io(format!("creating '{}'", p.display())))?;
            let mut w = BufWriter::with_capacity(1 << 20, f);
            w.write_all(&self.header)
                .map_err(io(format!("writing '{}'", p.display())))?;
            self.current = Some(w);
        }
        let p = self.inprogress();
        match self.current.as_mut() {
            Some(w) => w
                .write_all(bytes)
                .map_err(io(format!("writing '{}'", p.display()))),
            None => Err(ConnectorError::Other(
                "runnel bug (please report): staging file not open".into(),
            )),
        }
    }

    /// Seal (pre-commit): makes the open batch durable as checkpoint `checkpoint`'s. A
    /// checkpoint without rows seals nothing.
    ///
    /// # Errors
    /// The batch cannot be flushed, synced or renamed.
    pub fn seal(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        crash_point("before-seal", checkpoint);
        let Some(mut w) = self.current.take() else {
            return Ok(());
        };
        let from = self.inprogress();
        w.flush()
            .and_then(|()| w.get_ref().sync_all())
            .map_err(io(format!("fsync '{}'", from.display())))?;
        let to = self.dir.join(self.sealed(checkpoint));
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            // The task's next owner recovered the directory under this run.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.attempt.is_some() => {
                return Err(ConnectorError::Other(format!(
                    "sealing '{}': the staged batch is gone: another member took this task \
                     over and recovered its sink (this run is fenced)",
                    from.display()
                )));
            }
            Err(e) => return Err(io(format!("sealing '{}'", from.display()))(e)),
        }
        sync_dir(&self.dir)?;
        // The final batch is applied at once, and dropped by any recovery: no copy.
        if let Some(mirror) = self.mirror.as_ref().filter(|_| checkpoint != FINAL) {
            mirror.put(&self.sealed(checkpoint), &to)?;
        }
        crash_point("after-seal", checkpoint);
        Ok(())
    }

    /// Commit: applies every sealed batch of this subtask up to `upto`, oldest first (an
    /// earlier commit may have been skipped), and deletes it once applied.
    ///
    /// # Errors
    /// An apply fails; the batch stays sealed for the next attempt or start.
    pub fn commit(&mut self, upto: u64) -> Result<(), ConnectorError> {
        // Only this run's batches: another attempt's are a zombie's (or were applied
        // when this run recovered).
        let mine: Vec<Found> = sealed_in(&self.dir, &self.prefix)?
            .into_iter()
            .filter(|f| {
                f.txn.subtask == self.subtask
                    && f.txn.checkpoint <= upto
                    && f.attempt == self.attempt
            })
            .collect();
        for f in &mine {
            self.apply.apply(&f.txn, &f.path)?;
            crash_point("after-apply", f.txn.checkpoint);
            unmirror(self.mirror.as_deref(), &f.path)?;
            remove_sealed(&f.path)?;
        }
        if !mine.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The input ended after the final checkpoint: whatever was staged since is final.
    ///
    /// # Errors
    /// As [`Staging::seal`] and [`Staging::commit`].
    pub fn finish(&mut self) -> Result<(), ConnectorError> {
        self.seal(FINAL)?;
        self.commit(FINAL)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// An external system of lines: `apply` appends a batch's lines one at a time and
    /// records the batch as done (the way a database would in the same transaction as
    /// the rows, here with a marker per line), and can be made to stop part-way.
    #[derive(Default)]
    struct Lines {
        out: Mutex<Vec<(String, String)>>,
        crash_after: Mutex<Option<usize>>,
    }

    impl Apply for Lines {
        fn apply(&self, txn: &Txn, sealed: &Path) -> Result<(), ConnectorError> {
            let key = format!("{}/{}", txn.subtask, txn.checkpoint);
            let text = std::fs::read_to_string(sealed)
                .map_err(|e| ConnectorError::io("reading a sealed batch", e))?;
            let mut out = self.out.lock().unwrap();
            let done = out.iter().filter(|(k, _)| *k == key).count();
            for (i, line) in text.lines().enumerate().skip(done) {
                if *self.crash_after.lock().unwrap() == Some(i) {
                    return Err(ConnectorError::Other("injected crash mid-apply".into()));
                }
                out.push((key.clone(), line.to_string()));
            }
            Ok(())
        }

        fn discard_after(&self, restored: Option<u64>) -> Result<(), ConnectorError> {
            let r = restored.unwrap_or(0);
            self.out.lock().unwrap().retain(|(k, _)| {
                k.split_once('/')
                    .and_then(|(_, c)| c.parse::<u64>().ok())
                    .is_some_and(|c| c <= r)
            });
            Ok(())
        }
    }

    impl Lines {
        fn lines(&self) -> Vec<String> {
            self.out
                .lock()
                .unwrap()
                .iter()
                .map(|(_, l)| l.clone())
                .collect()
        }
    }

    /// Checkpoint 1 holds a, b; checkpoint 2 holds c, d; a crash somewhere in
    /// checkpoint 2's life, then a restart from the newest complete checkpoint, which
    /// replays what came after it: the output is a, b, c, d exactly once every time.
    #[test]
    fn a_crash_at_each_phase_recovers_exactly_once() {
        #[derive(Debug, Clone, Copy)]
        enum Crash {
            AfterStaging,
            AfterSeal,
            MidApply,
            AfterApply,
        }
        for crash in [
            Crash::AfterStaging,
            Crash::AfterSeal,
            Crash::MidApply,
            Crash::AfterApply,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let sink = Arc::new(Lines::default());
            let stage = |sink: &Arc<Lines>| {
                Staging::new(dir.path().to_path_buf(), ".p-", 0, Vec::new(), sink.clone())
            };
            recover(dir.path(), ".p-", sink.as_ref(), None).unwrap();
            let mut s = stage(&sink);
            s.write(b"a\nb\n").unwrap();
            s.seal(1).unwrap();
            s.commit(1).unwrap();
            s.write(b"c\nd\n").unwrap();
            // Where the crash happens decides which checkpoint the restart resumes from.
            let restored = match crash {
                Crash::AfterStaging => 1,
                Crash::AfterSeal => {
                    s.seal(2).unwrap();
                    2 // the checkpoint completed, its commit did not run
                }
                Crash::MidApply => {
                    s.seal(2).unwrap();
                    *sink.crash_after.lock().unwrap() = Some(1);
                    assert!(s.commit(2).is_err());
                    *sink.crash_after.lock().unwrap() = None;
                    2
                }
                Crash::AfterApply => {
                    s.seal(2).unwrap();
                    // Applied, but the sealed file was not deleted yet.
                    let f = sealed_in(dir.path(), ".p-").unwrap().remove(0);
                    sink.apply(&f.txn, &f.path).unwrap();
                    2
                }
            };
            drop(s);
            recover(dir.path(), ".p-", sink.as_ref(), Some(restored)).unwrap();
            let mut s = stage(&sink);
            if restored == 1 {
                // The source replays checkpoint 2's rows.
                s.write(b"c\nd\n").unwrap();
                s.seal(2).unwrap();
                s.commit(2).unwrap();
            }
            s.finish().unwrap();
            assert_eq!(sink.lines(), ["a", "b", "c", "d"], "{crash:?}");
            assert!(
                sealed_in(dir.path(), ".p-").unwrap().is_empty(),
                "{crash:?}: sealed files left"
            );
        }
    }

    #[test]
    fn a_restart_from_scratch_drops_staged_and_discards_output() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Lines::default());
        let mut s = Staging::new(
            dir.path().to_path_buf(),
            "",
            3,
            b"h\n".to_vec(),
            sink.clone(),
        );
        s.write(b"x\n").unwrap();
        s.seal(1).unwrap();
        s.commit(1).unwrap();
        assert_eq!(sink.lines(), ["h", "x"]);
        s.write(b"y\n").unwrap();
        s.seal(2).unwrap();
        s.write(b"z\n").unwrap();
        drop(s);
        recover(dir.path(), "", sink.as_ref(), None).unwrap();
        assert!(sink.lines().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A distributed task moves from attempt A to attempt B while A still runs (a
    /// zombie): B resumes from A's checkpoint 1; A then stages and seals its checkpoint 2
    /// in the same directory, and B its own. Only B's batch of checkpoint 2 is applied,
    /// by B's commit and by a later owner's recovery from B's checkpoint 2 alike.
    #[test]
    fn a_zombie_attempt_never_has_its_batches_applied() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Lines::default());
        let (a, b) = (attempt_of("a assignment 1"), attempt_of("b assignment 1"));
        let stage = |attempt| {
            Staging::new(dir.path().to_path_buf(), ".p-", 0, Vec::new(), sink.clone())
                .with_attempt(Some(attempt))
        };
        recover(dir.path(), ".p-", sink.as_ref(), None).unwrap();
        let mut zombie = stage(a);
        zombie.write(b"a1\n").unwrap();
        zombie.seal(1).unwrap();
        zombie.write(b"a2-early\n").unwrap();
        // B takes over from checkpoint 1 (A's): A's batch 1 is applied, A's staged rows go.
        let from_a = Resume {
            checkpoint: Some(1),
            attempt: Some(a),
        };
        recover(dir.path(), ".p-", sink.as_ref(), from_a).unwrap();
        assert_eq!(sink.lines(), ["a1"]);
        let mut owner = stage(b);
        owner.write(b"b2\n").unwrap();
        // The zombie's staged file was removed under it: its seal says it is fenced.
        let err = zombie.seal(2).unwrap_err().to_string();
        assert!(err.contains("fenced"), "{err}");
        // It stages again and seals (a zombie that has not noticed yet).
        zombie.write(b"a2-late\n").unwrap();
        zombie.seal(2).unwrap();
        owner.seal(2).unwrap();
        owner.commit(2).unwrap();
        assert_eq!(sink.lines(), ["a1", "b2"]);
        // B dies before applying its checkpoint 3; C restores B's checkpoint 3.
        owner.write(b"b3\n").unwrap();
        owner.seal(3).unwrap();
        zombie.write(b"a3\n").unwrap();
        zombie.seal(3).unwrap();
        let from_b = Resume {
            checkpoint: Some(3),
            attempt: Some(b),
        };
        recover(dir.path(), ".p-", sink.as_ref(), from_b).unwrap();
        assert_eq!(sink.lines(), ["a1", "b2", "b3"]);
        assert!(sealed_in(dir.path(), ".p-").unwrap().is_empty());
    }

    #[test]
    fn sealed_names_parse_with_and_without_an_attempt() {
        for attempt in [None, Some(0xdead_beef_u64), Some(u64::MAX)] {
            let name = sealed_name(".part-task-0-3-", 2, 17, attempt);
            let (txn, got) = parse_sealed(".part-task-0-3-", &name).unwrap();
            assert_eq!((txn.subtask, txn.checkpoint, got), (2, 17, attempt));
        }
        // Another task's files, under a shorter prefix, are not this table's.
        assert!(parse_sealed(".part-", &sealed_name(".part-task-0-3-", 2, 17, None)).is_none());
    }

    /// A store of copies in a directory (the object store's role in these tests).
    #[derive(Debug)]
    struct DirStore(PathBuf);

    impl SealedStore for DirStore {
        fn put(&self, name: &str, from: &Path) -> Result<(), ConnectorError> {
            std::fs::copy(from, self.0.join(name))
                .map(|_| ())
                .map_err(|e| ConnectorError::io("put", e))
        }
        fn get(&self, name: &str, to: &Path) -> Result<(), ConnectorError> {
            std::fs::copy(self.0.join(name), to)
                .map(|_| ())
                .map_err(|e| ConnectorError::io("get", e))
        }
        fn list(&self) -> Result<Vec<String>, ConnectorError> {
            Ok(std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect())
        }
        fn delete(&self, name: &str) -> Result<(), ConnectorError> {
            remove_if_exists(&self.0.join(name))
        }
    }

    /// Two machines' staging directories and a store of copies, with subtask 0's staging
    /// (prefix `.p-`) on the first one, copying what it seals to the store.
    struct TwoMachines {
        lost: tempfile::TempDir,
        other: tempfile::TempDir,
        _copies: tempfile::TempDir,
        store: Arc<dyn SealedStore>,
    }

    impl TwoMachines {
        fn new() -> Self {
            let copies = tempfile::tempdir().unwrap();
            let store: Arc<dyn SealedStore> = Arc::new(DirStore(copies.path().to_path_buf()));
            TwoMachines {
                lost: tempfile::tempdir().unwrap(),
                other: tempfile::tempdir().unwrap(),
                _copies: copies,
                store,
            }
        }

        fn staging(&self, on: &Path, sink: Arc<dyn Apply>) -> Staging {
            Staging::new(on.to_path_buf(), ".p-", 0, Vec::new(), sink)
                .with_mirror(Some(self.store.clone()))
        }
    }

    /// Checkpoint 1 complete (sealed, not applied), checkpoint 2 sealed but not complete;
    /// then the machine is lost: a restart from checkpoint 1 on another one (an empty
    /// staging directory) applies checkpoint 1's batch from the copy and drops 2's.
    #[test]
    fn a_restart_on_another_machine_applies_the_copies_of_the_restored_checkpoint() {
        let m = TwoMachines::new();
        let (other, store) = (m.other.path(), &m.store);
        let sink = Arc::new(Lines::default());
        let mut s = m.staging(m.lost.path(), sink.clone());
        s.write(b"a\nb\n").unwrap();
        s.seal(1).unwrap();
        s.write(b"c\n").unwrap();
        s.seal(2).unwrap();
        assert_eq!(store.list().unwrap().len(), 2);
        drop(s);
        std::fs::remove_dir_all(m.lost.path()).unwrap();
        recover_with(other, ".p-", sink.as_ref(), Some(1), Some(store.as_ref())).unwrap();
        assert_eq!(sink.lines(), ["a", "b"]);
        assert!(store.list().unwrap().is_empty(), "copies left");
        // Applied batches' copies go with them.
        let mut s = m.staging(other, sink.clone());
        s.write(b"c\n").unwrap();
        s.seal(2).unwrap();
        s.commit(2).unwrap();
        s.finish().unwrap();
        assert_eq!(sink.lines(), ["a", "b", "c"]);
        assert!(store.list().unwrap().is_empty(), "copies left after commit");
    }

    /// An apply step that notes the progress it finds beside each batch.
    #[derive(Default)]
    struct SeesProgress(Mutex<Vec<Option<String>>>);

    impl Apply for SeesProgress {
        fn apply(&self, _txn: &Txn, sealed: &Path) -> Result<(), ConnectorError> {
            let found = std::fs::read_to_string(progress_path(sealed)).ok();
            self.0.lock().unwrap().push(found);
            Ok(())
        }
    }

    /// A batch whose first attempt began on the lost machine is applied again on another
    /// one with that attempt's progress (a Kafka sink's noted partition ends); copies of
    /// progress whose batch is gone are deleted.
    #[test]
    fn the_progress_of_a_first_attempt_travels_with_the_copy_of_its_batch() {
        let m = TwoMachines::new();
        let (lost, store) = (m.lost.path(), &m.store);
        let sink = Arc::new(SeesProgress::default());
        let mut s = m.staging(lost, sink.clone());
        s.write(b"a\n").unwrap();
        s.seal(1).unwrap();
        // The first attempt notes its progress, here and in the store, then the machine
        // is lost.
        let name = sealed_name(".p-", 0, 1, None);
        let progress = progress_path(&lost.join(&name));
        std::fs::write(&progress, "ends").unwrap();
        store.put(&progress_copy(&name), &progress).unwrap();
        let gone = sealed_name(".p-", 0, 0, None);
        store.put(&progress_copy(&gone), &progress).unwrap();
        drop(s);
        std::fs::remove_dir_all(lost).unwrap();
        recover_with(
            m.other.path(),
            ".p-",
            sink.as_ref(),
            Some(1),
            Some(store.as_ref()),
        )
        .unwrap();
        assert_eq!(*sink.0.lock().unwrap(), [Some("ends".to_string())]);
        assert!(store.list().unwrap().is_empty(), "copies left");
    }
}
