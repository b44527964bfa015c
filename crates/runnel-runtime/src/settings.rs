//! Every `SET 'key' = 'value'` runnel knows: its type, default and one-line doc, parsed
//! once from the script into typed [`Settings`]. An unknown key or a bad value is a
//! planning error with the line and column, and the closest known key.

use std::path::PathBuf;
use std::time::Duration;

use runnel_common::Position;
use runnel_common::options::did_you_mean;
use runnel_connectors::dead_letters::Target;
use runnel_sql::Statement;

use crate::error::RuntimeError;

/// The type of a setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingType {
    /// Any text.
    Text,
    /// A whole number >= 1.
    Count,
    /// A duration such as `5 s`, `250 ms`, `2 min`.
    Duration,
    /// A duration, or `off` to turn the feature off.
    DurationOrOff,
    /// `true` or `false`.
    Bool,
    /// A local path, `file://…` or `s3://bucket/prefix`.
    Location,
    /// Only this value is accepted (Flink settings whose other values runnel cannot honour).
    Fixed(&'static str),
    /// One of these words (`describe` shows them joined by `|`).
    Choice(&'static str, &'static [&'static str]),
    /// A Flink setting runnel accepts and ignores (it has no effect here).
    Ignored,
}

impl SettingType {
    /// Short name for tables and errors.
    pub fn describe(&self) -> &'static str {
        match self {
            SettingType::Text => "text",
            SettingType::Count => "integer >= 1",
            SettingType::Duration => "duration",
            SettingType::DurationOrOff => "duration or 'off'",
            SettingType::Bool => "true|false",
            SettingType::Location => "path, file:// or s3://",
            SettingType::Fixed(v) => v,
            SettingType::Choice(shown, _) => shown,
            SettingType::Ignored => "any (ignored)",
        }
    }
}

/// One known setting.
#[derive(Debug, Clone, Copy)]
pub struct SettingDef {
    /// The key.
    pub key: &'static str,
    /// Its type.
    pub ty: SettingType,
    /// The default, as a user reads it.
    pub default: &'static str,
    /// One line: what it is for.
    pub doc: &'static str,
}

const fn def(
    key: &'static str,
    ty: SettingType,
    default: &'static str,
    doc: &'static str,
) -> SettingDef {
    SettingDef {
        key,
        ty,
        default,
        doc,
    }
}

/// Every setting, by area.
pub const SETTINGS: &[SettingDef] = &[
    def(
        "pipeline.name",
        SettingType::Text,
        "the script's file name",
        "names the pipeline in the page, metrics and checkpoint directory",
    ),
    def(
        "parallelism.default",
        SettingType::Count,
        "number of cores",
        "subtasks per operator (--parallelism overrides)",
    ),
    def(
        "parallelism",
        SettingType::Count,
        "number of cores",
        "same as parallelism.default",
    ),
    def(
        "execution.batch-size",
        SettingType::Count,
        "8192",
        "preferred rows per source batch",
    ),
    def(
        "source.idle-timeout",
        SettingType::Duration,
        "5 s",
        "a source subtask without data this long stops holding back the watermark",
    ),
    def(
        "table.exec.source.idle-timeout",
        SettingType::Duration,
        "5 s",
        "Flink's name for source.idle-timeout",
    ),
    def(
        "execution.checkpointing.interval",
        SettingType::DurationOrOff,
        "10 s with an unbounded source, else off",
        "how often a checkpoint is taken",
    ),
    def(
        "execution.checkpointing.retained",
        SettingType::Count,
        "3",
        "complete checkpoints kept",
    ),
    def(
        "execution.mode",
        SettingType::Choice("single|distributed", &["single", "distributed"]),
        "single",
        "distributed: every process started with the script joins the pipeline's Kafka consumer group and runs the tasks of the partitions it is given",
    ),
    def(
        "distributed.session-timeout",
        SettingType::Duration,
        "10 s",
        "a distributed member silent this long leaves the group and its partitions move",
    ),
    def(
        "state.checkpoints.dir",
        SettingType::Location,
        "<data-dir>/checkpoints",
        "where checkpoints are written",
    ),
    def(
        "s3.endpoint",
        SettingType::Text,
        "AWS",
        "S3-compatible endpoint URL (MinIO, Ceph, …)",
    ),
    def("s3.region", SettingType::Text, "AWS_REGION", "S3 region"),
    def(
        "s3.access-key",
        SettingType::Text,
        "AWS_ACCESS_KEY_ID",
        "S3 access key id",
    ),
    def(
        "s3.secret-key",
        SettingType::Text,
        "AWS_SECRET_ACCESS_KEY",
        "S3 secret access key",
    ),
    def(
        "s3.allow-http",
        SettingType::Bool,
        "false",
        "allow a plain-HTTP S3 endpoint",
    ),
    def(
        "dead-letter.path",
        SettingType::Text,
        "per connector (beside the input, <topic>.dead-letter)",
        "a JSON-lines file every table's dead letters go to (a table's own option wins)",
    ),
    def(
        "dead-letter.topic",
        SettingType::Text,
        "per connector",
        "a log topic every table's dead letters go to (a table's own option wins)",
    ),
    def(
        "pipeline.on-error",
        SettingType::Choice("dead-letter|fail", &["dead-letter", "fail"]),
        "dead-letter",
        "a row whose expression fails (division by zero, overflow): 'dead-letter' it and go on, or 'fail' the pipeline",
    ),
    def(
        "quality.on-violation",
        SettingType::Choice(
            "dead-letter|drop|fail|warn",
            &["dead-letter", "drop", "fail", "warn"],
        ),
        "dead-letter",
        "what a row that violates a table's CHECK or NOT NULL rule does, unless the table's 'quality.on-violation[.<rule>]' option says",
    ),
    def(
        "quality.profile",
        SettingType::Choice("on|off", &["on", "off", "true", "false"]),
        "off",
        "keep a live profile of every source table (rows, NULLs, distinct values, min/max/mean/stddev, p50/p99), shown at /api/pipelines/{name}/quality and on the page",
    ),
    def(
        "vision.model",
        SettingType::Text,
        "the bundled EfficientNet-Lite0",
        "ONNX model directory or file for classify()",
    ),
    def(
        "vision.detect-model",
        SettingType::Text,
        "the bundled YOLOv4-tiny",
        "ONNX model directory or file for detect() (a YOLO-style model with its model.json)",
    ),
    def(
        "vision.detect-size",
        SettingType::Count,
        "the model's (416 for the bundled YOLOv4-tiny)",
        "side of the square detect() runs the model at, a multiple of 32 (320: ~40 % less work, fewer small objects found)",
    ),
    def(
        "vision.threads",
        SettingType::Count,
        "number of cores",
        "inference worker threads for classify() and detect()",
    ),
    def(
        "vision.batch",
        SettingType::Count,
        "16",
        "most images classified in one inference",
    ),
    def(
        "execution.runtime-mode",
        SettingType::Fixed("streaming"),
        "streaming",
        "Flink's runtime mode; runnel always streams (bounded sources end)",
    ),
    def(
        "table.exec.state.ttl",
        SettingType::Duration,
        "0 (kept forever)",
        "state of unbounded aggregates, joins and Top-N not touched this long is forgotten",
    ),
    def(
        "table.exec.mini-batch.enabled",
        SettingType::Bool,
        "false",
        "hold back the updates of unbounded GROUP BY aggregates and emit one change per key per mini-batch",
    ),
    def(
        "table.exec.mini-batch.allow-latency",
        SettingType::Duration,
        "1 s",
        "with mini-batches: the longest an update is held back (then flushed by the wall clock)",
    ),
    def(
        "table.exec.mini-batch.size",
        SettingType::Count,
        "5000",
        "with mini-batches: input rows per mini-batch",
    ),
    def(
        "table.optimizer.agg-phase-strategy",
        SettingType::Ignored,
        "",
        "Flink tuning, accepted and ignored",
    ),
    def(
        "table.optimizer.distinct-agg.split.enabled",
        SettingType::Ignored,
        "",
        "Flink tuning, accepted and ignored",
    ),
    def(
        "sql-client.execution.result-mode",
        SettingType::Ignored,
        "",
        "Flink SQL client display mode, accepted and ignored",
    ),
];

/// S3 access for checkpoints and `s3://` tables (`s3.*` settings).
pub type S3Settings = runnel_common::s3::S3Options;

/// `vision.*`: the image models of `classify` and `detect`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VisionSettings {
    /// `vision.model`: a model directory or `.onnx` file instead of the bundled one.
    pub model: Option<PathBuf>,
    /// `vision.detect-model`: the detector instead of the bundled one.
    pub detect_model: Option<PathBuf>,
    /// `vision.detect-size`: the detector's input side instead of its model.json's.
    pub detect_size: Option<u32>,
    /// `vision.threads`.
    pub threads: Option<usize>,
    /// `vision.batch`.
    pub batch: Option<usize>,
}

/// A script's settings, typed; defaults where the script sets nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `pipeline.name`.
    pub pipeline_name: Option<String>,
    /// `parallelism.default`.
    pub parallelism: Option<usize>,
    /// `execution.batch-size`.
    pub batch_size: usize,
    /// `source.idle-timeout`.
    pub idle_timeout: Duration,
    /// `execution.checkpointing.interval`: `None` when not set (the default depends on
    /// whether a source never ends), `Some(None)` when `off`.
    pub checkpoint_interval: Option<Option<Duration>>,
    /// `execution.checkpointing.retained`.
    pub checkpoints_retained: usize,
    /// `state.checkpoints.dir`, with where it was written.
    pub checkpoints_dir: Option<(String, Position)>,
    /// `s3.*`.
    pub s3: S3Settings,
    /// `vision.*`.
    pub vision: VisionSettings,
    /// `dead-letter.path` / `dead-letter.topic`: where every table's dead letters go.
    pub dead_letters: Option<Target>,
    /// `pipeline.on-error`: what an operator does with a row whose expression fails.
    pub on_error: runnel_engine::eval::OnError,
    /// `execution.mode = 'distributed'`.
    pub distributed: bool,
    /// `distributed.session-timeout`.
    pub session_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            pipeline_name: None,
            parallelism: None,
            batch_size: 8192,
            idle_timeout: Duration::from_secs(5),
            checkpoint_interval: None,
            checkpoints_retained: 3,
            checkpoints_dir: None,
            s3: S3Settings::default(),
            vision: VisionSettings::default(),
            dead_letters: None,
            on_error: runnel_engine::eval::OnError::DeadLetter,
            distributed: false,
            session_timeout: Duration::from_secs(10),
        }
    }
}

impl Settings {
    /// The settings of a parsed script's `SET` statements, in order (a later `SET` of the
    /// same key wins).
    ///
    /// # Errors
    /// [`RuntimeError::Setting`] for an unknown key (with the closest known one) or a
    /// value of the wrong type, at its line and column.
    pub fn from_statements(statements: &[Statement]) -> Result<Settings, RuntimeError> {
        let mut s = Settings::default();
        for stmt in statements {
            if let Statement::Set {
                key,
                value,
                key_at,
                value_at,
                ..
            } = stmt
            {
                s.apply(key, value, *key_at, *value_at)?;
            }
        }
        Ok(s)
    }

    fn apply(
        &mut self,
        key: &str,
        value: &str,
        key_at: Position,
        value_at: Position,
    ) -> Result<(), RuntimeError> {
        let Some(def) = SETTINGS.iter().find(|d| d.key == key) else {
            return Err(RuntimeError::Setting {
                at: key_at,
                message: format!(
                    "unknown setting '{key}'{}; `runnel settings` lists them all",
                    did_you_mean(key, SETTINGS.iter().map(|d| d.key))
                ),
            });
        };
        let bad = |expected: &str| RuntimeError::Setting {
            at: value_at,
            message: format!("SET '{key}' = '{value}': expected {expected}"),
        };
        let count = || {
            value
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad("a whole number >= 1"))
        };
        let duration = || {
            runnel_common::time::parse_duration_ms(value)
                .filter(|ms| *ms >= 0)
                .map(|ms| Duration::from_millis(ms as u64))
                .ok_or_else(|| bad("a duration such as '5 s', '250 ms' or '2 min'"))
        };
        let text = || Some(value.to_string());
        match def.ty {
            SettingType::Ignored => {
                tracing::info!("SET '{key}' is a Flink setting runnel ignores");
                return Ok(());
            }
            SettingType::Fixed(only) if value.eq_ignore_ascii_case(only) => return Ok(()),
            SettingType::Fixed(only) => return Err(bad(&format!("'{only}'"))),
            SettingType::Choice(shown, words)
                if !words.iter().any(|w| value.eq_ignore_ascii_case(w)) =>
            {
                return Err(bad(&format!("one of {shown}")));
            }
            _ => {}
        }
        match key {
            "pipeline.name" => self.pipeline_name = text(),
            "parallelism.default" | "parallelism" => self.parallelism = Some(count()?),
            "execution.batch-size" => self.batch_size = count()?,
            "source.idle-timeout" | "table.exec.source.idle-timeout" => {
                self.idle_timeout = duration()?
            }
            "execution.checkpointing.interval" => {
                self.checkpoint_interval = Some(match value.trim() {
                    "0" | "off" | "none" | "OFF" => None,
                    _ => Some(duration().map_err(|_| bad("a duration such as '10 s', or 'off'"))?),
                })
            }
            "execution.checkpointing.retained" => self.checkpoints_retained = count()?,
            "state.checkpoints.dir" => {
                if value.contains("://")
                    && !value.starts_with("file://")
                    && !value.starts_with("s3://")
                {
                    return Err(bad("a local directory, file://… or s3://bucket/prefix"));
                }
                self.checkpoints_dir = Some((value.to_string(), value_at));
            }
            "s3.endpoint" => self.s3.endpoint = text(),
            "s3.region" => self.s3.region = text(),
            "s3.access-key" => self.s3.access_key = text(),
            "s3.secret-key" => self.s3.secret_key = text(),
            "s3.allow-http" => {
                self.s3.allow_http = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("'true' or 'false'")),
                }
            }
            "dead-letter.path" => self.dead_letters = Some(Target::File(PathBuf::from(value))),
            "dead-letter.topic" => self.dead_letters = Some(Target::Topic(value.to_string())),
            "pipeline.on-error" => {
                self.on_error = runnel_engine::eval::OnError::parse(value)
                    .map_err(|_| bad("one of dead-letter|fail"))?;
            }
            "execution.mode" => self.distributed = value.eq_ignore_ascii_case("distributed"),
            "distributed.session-timeout" => {
                let d = duration()?;
                if d < Duration::from_secs(1) {
                    return Err(bad("a duration of at least 1 s"));
                }
                self.session_timeout = d;
            }
            "vision.model" => self.vision.model = Some(PathBuf::from(value)),
            "vision.detect-model" => self.vision.detect_model = Some(PathBuf::from(value)),
            // Whether the model's heads tile this side is the detector's to say, when it loads.
            "vision.detect-size" => {
                self.vision.detect_size =
                    Some(u32::try_from(count()?).map_err(|_| bad("a side in pixels, e.g. 320"))?);
            }
            "vision.threads" => self.vision.threads = Some(count()?),
            "vision.batch" => self.vision.batch = Some(count()?),
            // Validated here; the planner reads it for each stateful operator.
            "table.exec.state.ttl" | "table.exec.mini-batch.allow-latency" => {
                duration()?;
            }
            "table.exec.mini-batch.enabled" => {
                if !value.trim().eq_ignore_ascii_case("true")
                    && !value.trim().eq_ignore_ascii_case("false")
                {
                    return Err(bad("'true' or 'false'"));
                }
            }
            "table.exec.mini-batch.size" => {
                count()?;
            }
            // Read by the planner (rules) and the engine (profile).
            "quality.on-violation" | "quality.profile" => {}
            _ => {
                return Err(RuntimeError::Internal(format!(
                    "setting '{key}' is listed but not applied"
                )));
            }
        }
        Ok(())
    }
}

/// The settings as a Markdown table (what `runnel settings --markdown` prints).
pub fn markdown() -> String {
    let mut s = String::from("| setting | type | default | what it is for |\n|---|---|---|---|\n");
    for d in SETTINGS {
        s.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            d.key,
            d.ty.describe().replace('|', "\\|"),
            d.default,
            d.doc
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(sql: &str) -> Result<Settings, RuntimeError> {
        Settings::from_statements(&runnel_sql::parse_script(sql).expect("parses"))
    }

    #[test]
    fn every_listed_key_is_applied() {
        for d in SETTINGS {
            let value = match d.ty {
                SettingType::Count => "2",
                SettingType::Duration | SettingType::DurationOrOff => "1 s",
                SettingType::Bool => "true",
                SettingType::Fixed(v) => v,
                SettingType::Choice(_, words) => words[0],
                _ => "x",
            };
            let r = settings(&format!("SET '{}' = '{value}';", d.key));
            assert!(r.is_ok(), "{}: {r:?}", d.key);
        }
    }

    #[test]
    fn a_misspelled_key_names_line_column_and_the_right_key() {
        let err = settings(
            "SET 'pipeline.name' = 'x';\n  SET 'execution.checkpointing.intervall' = '1 s';",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "line 2, column 7: unknown setting 'execution.checkpointing.intervall'; did you mean \
             'execution.checkpointing.interval'?; `runnel settings` lists them all"
        );
    }

    #[test]
    fn bad_values_name_the_value_position() {
        let err = settings("SET 'parallelism.default' = 'four';")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 1, column 29:"), "{err}");
        assert!(err.contains("expected a whole number >= 1"), "{err}");
        let s = settings("SET 'execution.checkpointing.interval' = 'off';").unwrap();
        assert_eq!(s.checkpoint_interval, Some(None));
        let s = settings("SET source.idle-timeout = '250 ms';").unwrap();
        assert_eq!(s.idle_timeout, Duration::from_millis(250));
    }
}
