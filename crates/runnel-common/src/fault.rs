//! Crash injection for recovery tests: `RUNNEL_FAIL_AT=<phase>` aborts the process at that
//! phase of checkpoint `RUNNEL_FAIL_AT_CHECKPOINT` (default 2; `any`: the first checkpoint
//! that reaches the phase), with no cleanup, as a power loss would. Phases: `after-state`, `after-manifest` (the coordinator),
//! `after-pre-commit`, `after-commit` (a sink subtask), `before-seal`, `after-seal`,
//! `mid-apply`, `after-apply` (the transactional-sink mechanism and its sinks).

/// Aborts the process if `RUNNEL_FAIL_AT` names `phase` and `id` is the chosen checkpoint.
pub fn crash_point(phase: &str, id: u64) {
    static AT: std::sync::OnceLock<Option<(String, Option<u64>)>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| {
        let phase = std::env::var("RUNNEL_FAIL_AT").ok()?;
        let id = match std::env::var("RUNNEL_FAIL_AT_CHECKPOINT").ok().as_deref() {
            Some("any") => None,
            Some(v) => Some(v.parse().unwrap_or(2)),
            None => Some(2),
        };
        Some((phase, id))
    });
    if let Some((p, n)) = at
        && p == phase
        && n.is_none_or(|n| n == id)
    {
        eprintln!("runnel: injected crash {phase} of checkpoint {id}");
        std::process::abort();
    }
}
