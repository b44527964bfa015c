//! Group commit: many appends, one fsync, then wake the waiting appenders.
//!
//! A writer appends its frame under the partition's write lock and records the new
//! written end here (`record_write`). It then calls `wait_durable`: if the synced end
//! already covers it, it returns at once; if another thread is fsyncing, it waits on the
//! condvar; otherwise it becomes the leader, fsyncs everything written so far (without
//! holding the lock, so more writers can pile up behind it) and wakes everyone it covered.
//! Concurrent appenders therefore share fsyncs, and the fsync rate is bounded by the disk,
//! not by the number of producers.
//!
//! Three positions are tracked: `written` (bytes in the file), `synced` (fdatasync
//! returned) and `acked` (visible to readers and acknowledged to producers). With
//! `FsyncPolicy::Always` `acked == synced`; with `Interval` `acked == written`. A later
//! transactional mode can add a fourth, "last stable offset", without changing this shape.

use std::io;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A point in the partition: next offset and the byte position in the segment holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Position {
    /// One past the last offset covered.
    pub end_offset: u64,
    /// Base offset of the segment where `bytes` applies.
    pub segment: u64,
    /// Byte position within that segment.
    pub bytes: u64,
}

/// What an appender waits for: its end offset, in the generation it was written in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    pub end_offset: u64,
    pub generation: u64,
}

/// Why a wait failed.
#[derive(Debug)]
pub(crate) enum CommitError {
    /// The fsync covering this write failed; the write was rolled back.
    SyncFailed(String),
    /// The partition was closed before the write became durable.
    Closed,
}

#[derive(Debug)]
struct State {
    written: Position,
    synced: Position,
    acked: Position,
    flushing: bool,
    /// Bumped on every rollback, so a ticket cannot be satisfied by a reused offset.
    generation: u64,
    /// (generation after rollback, synced end at that rollback, error text).
    rollbacks: Vec<(u64, u64, String)>,
    /// Set while the last background fsync failed (Interval policy); cleared on success.
    sync_error: Option<String>,
    fsyncs: u64,
    last_sync: Instant,
    closed: bool,
}

/// The group-commit coordinator of one partition.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    cond: Condvar,
    ack_on_write: bool,
}

/// How many rollbacks to remember for tickets still waiting; older tickets fail safe.
const MAX_ROLLBACKS: usize = 64;

impl GroupCommit {
    /// Starts with everything up to `durable` synced; `ack_on_write` is the Interval policy.
    pub fn new(durable: Position, ack_on_write: bool) -> GroupCommit {
        GroupCommit {
            state: Mutex::new(State {
                written: durable,
                synced: durable,
                acked: durable,
                flushing: false,
                generation: 0,
                rollbacks: Vec::new(),
                sync_error: None,
                fsyncs: 0,
                last_sync: Instant::now(),
                closed: false,
            }),
            cond: Condvar::new(),
            ack_on_write,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves only plain integers behind; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by the writer (under the partition write lock) after its frame is written.
    pub fn record_write(&self, pos: Position) -> Ticket {
        let mut s = self.lock();
        s.written = pos;
        if self.ack_on_write {
            s.acked = pos;
            self.cond.notify_all();
        }
        Ticket {
            end_offset: pos.end_offset,
            generation: s.generation,
        }
    }

    /// Blocks until the ticket is durable. `sync` fsyncs the partition up to a written
    /// position; `rollback` cuts unsynced bytes back to the synced position after a failed
    /// fsync and then calls `rolled_back` under the write lock. Both run without the commit
    /// lock, and never concurrently with each other.
    pub fn wait_durable(
        &self,
        ticket: Ticket,
        sync: &dyn Fn(Position) -> io::Result<()>,
        rollback: &dyn Fn(&str),
    ) -> Result<(), CommitError> {
        let mut s = self.lock();
        loop {
            if s.generation != ticket.generation {
                // Offsets were reused after a rollback: only what was synced before the
                // first rollback after our write is ours.
                return match s.rollbacks.iter().find(|r| r.0 == ticket.generation + 1) {
                    Some((_, safe, _)) if ticket.end_offset <= *safe => Ok(()),
                    Some((_, _, err)) => Err(CommitError::SyncFailed(err.clone())),
                    None => Err(CommitError::SyncFailed(
                        "the write was rolled back after an fsync failure".into(),
                    )),
                };
            }
            if s.synced.end_offset >= ticket.end_offset {
                return Ok(());
            }
            if s.closed {
                return Err(CommitError::Closed);
            }
            if s.flushing {
                s = self.cond.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            s = self.lead_flush(s, sync, rollback);
        }
    }

    /// Performs one fsync round as leader; returns with the lock re-taken.
    fn lead_flush<'a>(
        &'a self,
        mut s: MutexGuard<'a, State>,
        sync: &dyn Fn(Position) -> io::Result<()>,
        rollback: &dyn Fn(&str),
    ) -> MutexGuard<'a, State> {
        s.flushing = true;
        let target = s.written;
        drop(s);
        let started = Instant::now();
        let result = sync(target);
        metrics::histogram!("runnel_log_fsync_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            if self.ack_on_write {
                // Acknowledged data must not be cut: remember the failure, retry next tick.
                tracing::error!(error = %e, "background fsync failed; appends are refused until an fsync succeeds");
            } else {
                rollback(&e.to_string());
            }
        }
        let mut s = self.lock();
        s.flushing = false;
        match result {
            Ok(()) => {
                s.fsyncs += 1;
                s.last_sync = Instant::now();
                s.sync_error = None;
                if target.end_offset > s.synced.end_offset {
                    s.synced = target;
                }
                if !self.ack_on_write {
                    s.acked = s.synced;
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if self.ack_on_write {
                    s.sync_error = Some(msg);
                }
            }
        }
        self.cond.notify_all();
        s
    }

    /// Called by the `rollback` callback while it holds the partition's write lock, after it
    /// cut the files back to the synced position: fails every ticket written since.
    pub fn rolled_back(&self, reason: &str) {
        let mut s = self.lock();
        s.generation += 1;
        let (g, safe) = (s.generation, s.synced.end_offset);
        s.rollbacks.push((g, safe, reason.to_owned()));
        if s.rollbacks.len() > MAX_ROLLBACKS {
            s.rollbacks.remove(0);
        }
        s.written = s.synced;
        self.cond.notify_all();
    }

    /// Background flush for the Interval policy (and close): fsyncs if anything is unsynced.
    pub fn flush(
        &self,
        sync: &dyn Fn(Position) -> io::Result<()>,
        rollback: &dyn Fn(&str),
    ) -> Result<(), CommitError> {
        let mut s = self.lock();
        while s.flushing {
            s = self.cond.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.written.end_offset == s.synced.end_offset && s.sync_error.is_none() {
            return Ok(());
        }
        // What this flush fsyncs; writes arriving during the fsync are the next one's.
        let target = s.written.end_offset;
        let s = self.lead_flush(s, sync, rollback);
        match &s.sync_error {
            Some(e) => Err(CommitError::SyncFailed(e.clone())),
            None if s.synced.end_offset < target => Err(CommitError::SyncFailed(
                "fsync failed; unsynced writes were rolled back".into(),
            )),
            None => Ok(()),
        }
    }

    /// True if a background flush is due (`interval` passed since the last fsync).
    pub fn flush_due(&self, interval: Duration) -> bool {
        let s = self.lock();
        (s.written.end_offset != s.synced.end_offset || s.sync_error.is_some())
            && s.last_sync.elapsed() >= interval
    }

    /// The error of the last failed background fsync, if it has not been cleared yet.
    pub fn sync_error(&self) -> Option<String> {
        self.lock().sync_error.clone()
    }

    /// Position of what readers may see (acknowledged records).
    pub fn acked(&self) -> Position {
        self.lock().acked
    }

    /// Position known durable on disk.
    pub fn synced(&self) -> Position {
        self.lock().synced
    }

    /// Position of everything written (durable or not).
    #[cfg(test)]
    pub fn written(&self) -> Position {
        self.lock().written
    }

    /// Number of fsyncs performed.
    pub fn fsyncs(&self) -> u64 {
        self.lock().fsyncs
    }

    /// Counts an fsync done outside a group round (segment roll).
    pub fn note_external_sync(&self, pos: Position) {
        let mut s = self.lock();
        s.fsyncs += 1;
        if pos.end_offset > s.synced.end_offset {
            s.synced = pos;
            if !self.ack_on_write {
                s.acked = pos;
            }
            self.cond.notify_all();
        }
    }

    /// Marks the coordinator closed, waking every waiter.
    pub fn close(&self) {
        self.lock().closed = true;
        self.cond.notify_all();
    }

    /// Waits until `acked.end_offset > offset` or the timeout passes; true if it did.
    pub fn wait_for(&self, offset: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if s.acked.end_offset > offset {
                return true;
            }
            if s.closed {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self
                .cond
                .wait_timeout(s, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn pos(end: u64) -> Position {
        Position {
            end_offset: end,
            segment: 0,
            bytes: end * 10,
        }
    }

    #[test]
    fn waiters_share_fsyncs() {
        let gc = Arc::new(GroupCommit::new(Position::default(), false));
        let syncs = Arc::new(AtomicU64::new(0));
        let next = Arc::new(Mutex::new(0u64));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gc, syncs, next) = (gc.clone(), syncs.clone(), next.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let t = {
                            let mut n = next.lock().unwrap();
                            *n += 1;
                            gc.record_write(pos(*n))
                        };
                        gc.wait_durable(
                            t,
                            &|_| {
                                syncs.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_micros(200));
                                Ok(())
                            },
                            &|_| {},
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(gc.acked().end_offset, 400);
        assert!(syncs.load(Ordering::Relaxed) < 400);
    }

    #[test]
    fn failed_sync_rolls_back_and_fails_the_ticket() {
        let gc = GroupCommit::new(pos(5), false);
        let t = gc.record_write(pos(6));
        let rolled = Mutex::new(None);
        let r = gc.wait_durable(t, &|_| Err(io::Error::other("EIO")), &|e| {
            *rolled.lock().unwrap() = Some(gc.synced());
            gc.rolled_back(e);
        });
        assert!(matches!(r, Err(CommitError::SyncFailed(_))));
        assert_eq!(*rolled.lock().unwrap(), Some(pos(5)));
        assert_eq!(gc.written(), pos(5));
        // A write reusing offset 5 in the new generation succeeds normally.
        let t = gc.record_write(pos(6));
        gc.wait_durable(t, &|_| Ok(()), &|_| {}).unwrap();
        assert_eq!(gc.acked().end_offset, 6);
    }

    /// Issue 16: a write arriving while the background fsync runs is not a failure of
    /// that fsync.
    #[test]
    fn writes_during_a_background_flush_are_not_reported_as_rolled_back() {
        let gc = GroupCommit::new(pos(0), true);
        gc.record_write(pos(3));
        let r = gc.flush(
            &|_| {
                gc.record_write(pos(4));
                Ok(())
            },
            &|_| {},
        );
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(gc.synced(), pos(3));
        assert!(gc.flush(&|_| Ok(()), &|_| {}).is_ok());
        assert_eq!(gc.synced(), pos(4));
    }
}
