//! The one-screen run summary printed on stderr when a pipeline ends.

use std::fmt::Write;
use std::time::Duration;

use runnel_engine::PipelineMetrics;
use runnel_sql::{NodeSpec, PipelineGraph};

/// Rows read per source, written per sink, dead letters, late rows, elapsed time.
pub fn render(
    name: &str,
    graph: &PipelineGraph,
    metrics: &PipelineMetrics,
    elapsed: Duration,
    ok: bool,
) -> String {
    let mut s = String::new();
    let secs = elapsed.as_secs_f64();
    let status = if ok { "finished" } else { "failed" };
    let _ = writeln!(s, "runnel: {name} {status} in {secs:.2} s");
    for node in &graph.nodes {
        let Some(m) = metrics.nodes.get(node.id) else {
            continue;
        };
        match &node.spec {
            NodeSpec::Source(t, _) => {
                let rows = m.connector.rows.get().max(m.rows_out.get());
                let _ = write!(s, "  source {:<20} {:>12} rows read", t.name, group(rows));
                let dead = m.connector.dead_letters.get();
                if dead > 0 {
                    let path = dead_letter_path(m);
                    let _ = write!(s, ", {} dead-lettered -> {path}", group(dead));
                }
                s.push('\n');
            }
            NodeSpec::Sink(t) => {
                let rows = m.connector.rows.get().max(m.rows_in.get());
                let _ = writeln!(
                    s,
                    "  sink   {:<20} {:>12} rows written",
                    t.name,
                    group(rows)
                );
            }
            NodeSpec::Quality(q) => {
                let counts = m.rules.values();
                for r in &q.rules {
                    let n = counts
                        .iter()
                        .find(|(name, _)| *name == r.name)
                        .map_or(0, |(_, c)| *c);
                    if n > 0 {
                        let what = match r.action {
                            runnel_sql::OnViolation::DeadLetter => {
                                format!("dead-lettered -> {}", dead_letter_path(m))
                            }
                            runnel_sql::OnViolation::Drop => "dropped".into(),
                            runnel_sql::OnViolation::Warn => "kept (warn)".into(),
                            runnel_sql::OnViolation::Fail => "failed the run".into(),
                        };
                        let _ = writeln!(
                            s,
                            "  {:<27} {:>12} rows violate {} {}, {what}",
                            format!(
                                "{} {}",
                                if q.sink { "sink" } else { "source" },
                                q.table.name
                            ),
                            group(n),
                            r.name,
                            r.text
                        );
                    }
                }
            }
            _ => {
                let late = m.late_rows.get();
                if late > 0 {
                    let _ = writeln!(
                        s,
                        "  {:<27} {:>12} late rows dropped",
                        node.label,
                        group(late)
                    );
                }
                let dead = m.connector.dead_letters.get();
                if dead > 0 {
                    let path = dead_letter_path(m);
                    let _ = writeln!(
                        s,
                        "  {:<27} {:>12} rows whose expressions failed, dead-lettered -> {path}",
                        node.label,
                        group(dead)
                    );
                }
            }
        }
    }
    s
}

/// Where a node's dead letters went (empty before the first).
fn dead_letter_path(m: &runnel_engine::metrics::NodeMetrics) -> String {
    m.connector
        .dead_letter_path
        .lock()
        .ok()
        .and_then(|p| p.clone())
        .unwrap_or_default()
}

/// 1234567 → "1,234,567".
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The checkpoint lines of the summary: the last complete one, and the failed ones.
pub fn checkpoints(report: &mut String, c: &runnel_engine::checkpoint::CheckpointStats) {
    match &c.last {
        Some(l) => {
            let _ = writeln!(
                report,
                "  checkpoint {} complete at {} ({} ms, {} bytes of state){}",
                l.id,
                runnel_common::time::format_timestamp(l.time_ms),
                l.duration_ms,
                group(l.size_bytes),
                c.restored_from
                    .map(|r| format!("; resumed from checkpoint {r}"))
                    .unwrap_or_default()
            );
        }
        None => report.push_str("  no checkpoint completed\n"),
    }
    for f in &c.failed {
        let _ = writeln!(report, "  checkpoint failed: {f}");
    }
}
