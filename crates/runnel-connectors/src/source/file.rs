//! `file` source: reads JSON lines or CSV from a file, or from every regular
//! file of a directory in file-name order; bounded, so it ends.
//!
//! Subtask `i` of `P` reads the files whose index `n` has `n % P == i`.
//! Records that do not convert go to a dead-letter file shared by all
//! subtasks, and are counted; they never stop the pipeline.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use csv::ByteRecord;
use runnel_common::TableSpec;
use runnel_common::metrics::ConnectorMetrics;
use serde_json::json;

use crate::dead_letters::{DeadLetter, DeadLetterWriter, Location, Target};
use crate::descriptor::{
    self, CheckContext, CheckFuture, Connector, Guarantee, OptionDef, OptionType, Role,
};
use crate::format::csv::{CsvDecoder, reader_builder};
use crate::format::json::JsonDecoder;
use crate::format::parquet::ParquetRows;
use crate::format::{Decoded, Reject, check_schema};
use crate::{ConnectorError, Source, SourceContext, SourcePoll};

/// `connector = 'file'`: JSON lines or CSV files, read (bounded) or written.
pub const CONNECTOR: Connector = Connector {
    name: "file",
    doc: "JSON-lines or CSV files; read to the end, or written (part files with checkpoints)",
    options: &[
        OptionDef::new(
            "path",
            OptionType::Path,
            "input file or directory (read in name order); output file, or directory of part files with checkpoints",
        )
        .required(),
        OptionDef::new("format", OptionType::Choice(&["json", "csv"]), "record encoding")
            .default("json"),
        OptionDef::new(
            "dead-letter.path",
            OptionType::Path,
            "where records that cannot be read go",
        )
        .default("<path>.dead-letter.jsonl")
        .source_only(),
        OptionDef::new(
            "dead-letter.topic",
            OptionType::Text,
            "a log topic for records that cannot be read, instead of a file",
        )
        .source_only(),
        OptionDef::new(
            "sink.rolling-policy.file-size",
            OptionType::Text,
            "with checkpoints: append committed rows to one part per subtask and show it once \
             this big (e.g. '128MB'; without either rolling option every checkpoint makes a part)",
        )
        .sink_only(),
        OptionDef::new(
            "sink.rolling-policy.rollover-interval",
            OptionType::Text,
            "with checkpoints: show a part this long after its first rows (e.g. '5 min'; \
             default with a file size: 30 min); the input's end shows it too",
        )
        .sink_only(),
    ],
    source: Some(build),
    sink: Some(crate::sink::file::build),
    unbounded: descriptor::never_unbounded,
    guarantee: Guarantee::ExactlyOnce,
    updates: descriptor::updates_with_json,
    needs: &[],
    validate,
    check,
    metadata: &[],
    upserts: false,
    lookup: None,
};

/// The declared columns must be ones the formats can read.
fn validate(spec: &TableSpec) -> Result<(), ConnectorError> {
    FileSourceConfig::try_new(spec)?;
    Ok(())
}

/// A source's input must exist; a sink's directory must be creatable.
fn check(spec: TableSpec, role: Role, _: CheckContext) -> CheckFuture {
    Box::pin(async move {
        let path = PathBuf::from(spec.options.get("path").unwrap_or_default());
        match role {
            Role::Source | Role::Both => {
                let config = FileSourceConfig::try_new(&spec)?;
                check_schema(&spec.name, &spec.schema)?;
                list_files(&spec.name, &config.path, &config.dead_letter_path).map(|_| ())
            }
            Role::Sink => writable_under(&spec.name, &path, path.parent()),
        }
    })
}

/// A sink may write `path` if the nearest existing directory at or above `start` (none
/// given or none existing: the working directory) is writable.
pub(crate) fn writable_under(
    table: &str,
    path: &Path,
    start: Option<&Path>,
) -> Result<(), ConnectorError> {
    let mut dir = start.map(PathBuf::from).unwrap_or_default();
    while !dir.as_os_str().is_empty() && !dir.exists() {
        dir = dir.parent().map(PathBuf::from).unwrap_or_default();
    }
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() && !m.permissions().readonly() => Ok(()),
        Ok(_) => Err(ConnectorError::Other(format!(
            "table '{table}': cannot write '{}': '{}' is not a writable directory",
            path.display(),
            dir.display()
        ))),
        Err(e) => Err(ConnectorError::io(
            format!("table '{table}': checking '{}'", dir.display()),
            e,
        )),
    }
}

/// How long one poll may keep reading batches that were rejected entirely.
const POLL_BUDGET: Duration = Duration::from_millis(50);

/// The input encodings of the file source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// One JSON object per line (the default).
    Json,
    /// A header row, then one record per row.
    Csv,
    /// Parquet files (the `filesystem` connector).
    Parquet,
}

/// Options of `CREATE TABLE … WITH (connector = 'file', …)` when read from.
#[derive(Debug, Clone)]
pub struct FileSourceConfig {
    /// A file, or a directory whose non-hidden regular files are read in name order.
    pub path: PathBuf,
    /// `json` (default) or `csv`.
    pub format: FileFormat,
    /// Where rejected records go; default `<path>.dead-letter.jsonl` beside the input.
    pub dead_letter_path: PathBuf,
    /// CSV files start with a header row naming the columns (`file`); without one
    /// (`filesystem`, as Flink's CSV format), fields are the columns in declared order.
    pub csv_header: bool,
    /// `PARTITIONED BY` (`filesystem`): files are found in Hive-style directories
    /// `k=v/…` under `path`, and these columns come from their names, not the files.
    pub partitioned: Option<Partitioned>,
    /// The files to read with their partition values, when a table format lists them
    /// (`delta`) instead of a directory listing.
    pub files: Option<Vec<(PathBuf, Vec<Option<String>>)>>,
}

/// How a partitioned directory is laid out.
#[derive(Debug, Clone)]
pub struct Partitioned {
    /// The partition columns' indexes in the table, in directory order.
    pub columns: Vec<usize>,
    /// The directory name of NULL values (`partition.default-name`).
    pub default_name: String,
    /// Decodes a directory name's escaped value (`%3A` → `:`).
    pub unescape: fn(&str) -> String,
}

impl FileSourceConfig {
    /// Reads and validates the table's options.
    pub fn try_new(spec: &TableSpec) -> Result<Self, ConnectorError> {
        let opt = |source| ConnectorError::Option {
            table: spec.name.clone(),
            source,
        };
        CONNECTOR.check_options(spec)?;
        let path_text = spec.options.required("file", "path").map_err(opt)?;
        let format = match spec
            .options
            .choice("file", "format", &["json", "csv"])
            .map_err(opt)?
        {
            Some("csv") => FileFormat::Csv,
            _ => FileFormat::Json,
        };
        let dead_letter_path = match spec.options.get("dead-letter.path") {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(format!(
                "{}.dead-letter.jsonl",
                path_text.trim_end_matches(['/', '\\'])
            )),
        };
        Ok(Self {
            path: PathBuf::from(path_text),
            format,
            dead_letter_path,
            csv_header: true,
            partitioned: None,
            files: None,
        })
    }
}

/// Validates options and schema, lists the input files and returns one subtask per context.
///
/// # Errors
/// Unknown or missing options, unsupported column types, or an input path that does not exist.
pub fn build(
    spec: &TableSpec,
    contexts: Vec<SourceContext>,
) -> Result<Vec<Box<dyn Source>>, ConnectorError> {
    build_with(spec, contexts, FileSourceConfig::try_new(spec)?)
}

/// [`build`] with options already read (the `filesystem` connector reads its own).
///
/// # Errors
/// Unsupported column types, or an input path that does not exist.
pub fn build_with(
    spec: &TableSpec,
    contexts: Vec<SourceContext>,
    config: FileSourceConfig,
) -> Result<Vec<Box<dyn Source>>, ConnectorError> {
    if config.format != FileFormat::Parquet {
        check_schema(&spec.name, &spec.schema)?;
    }
    let Some(first) = contexts.first() else {
        return Ok(Vec::new());
    };
    let own = crate::dead_letters::own_target(spec);
    let dead = first.dead_letters.writer(
        &spec.name,
        own,
        crate::dead_letters::beside(&config.path),
        &first.metrics,
    );
    let skip = match dead.target() {
        Target::File(p) => p.clone(),
        Target::Topic(_) => PathBuf::new(),
    };
    let (files, partitions): (Vec<PathBuf>, Vec<Vec<Option<String>>>) = match &config.partitioned {
        _ if config.files.is_some() => config.files.clone().unwrap_or_default().into_iter().unzip(),
        Some(p) => {
            let names: Vec<String> = p
                .columns
                .iter()
                .map(|&c| spec.schema.field(c).name().clone())
                .collect();
            let mut found = Vec::new();
            list_partitioned(
                &spec.name,
                &config.path,
                &names,
                p,
                &mut Vec::new(),
                &mut found,
            )?;
            found.sort();
            found.into_iter().unzip()
        }
        None => {
            let files = list_files(&spec.name, &config.path, &skip)?;
            let n = files.len();
            (files, vec![Vec::new(); n])
        }
    };
    let files = Arc::new(files);
    let partitions = Arc::new(partitions);
    let mut sources: Vec<Box<dyn Source>> = Vec::with_capacity(contexts.len());
    for ctx in contexts {
        let dl = dead.clone();
        sources.push(Box::new(FileSource::new(
            spec,
            &config,
            (files.clone(), partitions.clone()),
            ctx,
            dl,
        )));
    }
    Ok(sources)
}

/// The files under `dir` at partition depth `values.len()`, with their partition values
/// (Hive-style `name=value` directories, names in `names`' order). Hidden entries (`.`, `_`
/// as in `_SUCCESS`) are skipped.
fn list_partitioned(
    table: &str,
    dir: &Path,
    names: &[String],
    p: &Partitioned,
    values: &mut Vec<Option<String>>,
    found: &mut Vec<(PathBuf, Vec<Option<String>>)>,
) -> Result<(), ConnectorError> {
    let ctx = || format!("table '{table}': reading directory '{}'", dir.display());
    for entry in std::fs::read_dir(dir).map_err(|e| ConnectorError::io(ctx(), e))? {
        let entry = entry.map_err(|e| ConnectorError::io(ctx(), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(['.', '_']) {
            continue;
        }
        let path = entry.path();
        let is_dir = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
        match names.get(values.len()) {
            Some(want) if is_dir => {
                let Some((key, value)) = name.split_once('=') else {
                    continue;
                };
                if !key.eq_ignore_ascii_case(want) {
                    continue;
                }
                let value = (p.unescape)(value);
                values.push((value != p.default_name).then_some(value));
                list_partitioned(table, &path, names, p, values, found)?;
                values.pop();
            }
            None if !is_dir => found.push((path, values.clone())),
            _ => {}
        }
    }
    Ok(())
}

/// The input files of `path` in read order.
pub(crate) fn list_files(
    table: &str,
    path: &Path,
    dead_letter: &Path,
) -> Result<Vec<PathBuf>, ConnectorError> {
    let ctx = || format!("table '{table}': input path '{}'", path.display());
    let meta = std::fs::metadata(path).map_err(|e| ConnectorError::io(ctx(), e))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| ConnectorError::io(ctx(), e))? {
        let entry = entry.map_err(|e| ConnectorError::io(ctx(), e))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let p = entry.path();
        // fs::metadata follows symlinks: a link to a file is read, to a directory skipped.
        let is_file = std::fs::metadata(&p).map(|m| m.is_file()).unwrap_or(false);
        if is_file && p != dead_letter {
            files.push(p);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Per input file: its partition values (`None`: the default partition).
type Partitions = Arc<Vec<Vec<Option<String>>>>;

/// One subtask of the file source.
pub struct FileSource {
    table: String,
    schema: SchemaRef,
    format: FileFormat,
    csv_header: bool,
    files: Arc<Vec<PathBuf>>,
    /// Per file: its partition values (`None`: the default partition), for the columns
    /// `partition_cols`; empty when the table is not partitioned.
    partitions: Partitions,
    partition_cols: Vec<usize>,
    /// The columns the files hold (the table's, without the partition columns).
    data_schema: SchemaRef,
    parallelism: usize,
    /// Index (into `files`) of the file being read, or the next one to open.
    next_file: usize,
    open: Option<OpenFile>,
    batch_size: usize,
    metrics: ConnectorMetrics,
    dead: Arc<DeadLetterWriter>,
}

/// The file being read, with the rejects seen in it for the one warning per file.
struct OpenFile {
    path: PathBuf,
    reader: Reader,
    rejects: u64,
    first_reject: Option<String>,
}

enum Reader {
    Json {
        reader: BufReader<File>,
        /// Byte offset of the next unread line.
        offset: u64,
        /// Line number of the next unread line (1-based).
        line: usize,
        decoder: JsonDecoder,
        buf: Vec<u8>,
        spans: Vec<(usize, usize, usize)>,
    },
    Csv {
        reader: csv::Reader<File>,
        decoder: CsvDecoder,
        records: Vec<ByteRecord>,
    },
    Parquet {
        rows: ParquetRows,
        /// Rows returned from the file so far.
        read: u64,
    },
}

impl FileSource {
    fn new(
        spec: &TableSpec,
        config: &FileSourceConfig,
        (files, partitions): (Arc<Vec<PathBuf>>, Partitions),
        ctx: SourceContext,
        dead: Arc<DeadLetterWriter>,
    ) -> Self {
        let partition_cols = config
            .partitioned
            .as_ref()
            .map(|p| p.columns.clone())
            .unwrap_or_default();
        let data_cols: Vec<usize> = (0..spec.schema.fields().len())
            .filter(|i| !partition_cols.contains(i))
            .collect();
        let data_schema = spec
            .schema
            .project(&data_cols)
            .map_or_else(|_| spec.schema.clone(), Arc::new);
        Self {
            table: spec.name.clone(),
            schema: spec.schema.clone(),
            format: config.format,
            csv_header: config.csv_header,
            files,
            partitions,
            partition_cols,
            data_schema,
            parallelism: ctx.parallelism.max(1),
            next_file: ctx.subtask,
            open: None,
            batch_size: if ctx.batch_size == 0 {
                1024
            } else {
                ctx.batch_size
            },
            metrics: ctx.metrics,
            dead,
        }
    }

    /// Opens file `index` at byte `offset` (0: the start, after the CSV header) and line `line`.
    fn open_file(&mut self, index: usize, offset: u64, line: usize) -> Result<(), ConnectorError> {
        let Some(path) = self.files.get(index).cloned() else {
            return Ok(());
        };
        let ctx = || format!("table '{}': reading '{}'", self.table, path.display());
        let mut file = File::open(&path).map_err(|e| ConnectorError::io(ctx(), e))?;
        let reader = match self.format {
            FileFormat::Json => {
                file.seek(SeekFrom::Start(offset))
                    .map_err(|e| ConnectorError::io(ctx(), e))?;
                Reader::Json {
                    reader: BufReader::with_capacity(1 << 16, file),
                    offset,
                    line: line.max(1),
                    decoder: JsonDecoder::try_new(self.data_schema.clone())?,
                    buf: Vec::new(),
                    spans: Vec::new(),
                }
            }
            FileFormat::Csv => {
                let (mut reader, headers) = if self.csv_header {
                    let mut reader = reader_builder().from_reader(file);
                    let headers = reader
                        .byte_headers()
                        .map_err(|e| csv_error(ctx(), e))?
                        .clone();
                    (reader, headers)
                } else {
                    let reader = reader_builder().has_headers(false).from_reader(file);
                    let names = self.data_schema.fields().iter().map(|f| f.name().as_str());
                    (reader, ByteRecord::from(names.collect::<Vec<_>>()))
                };
                if offset > 0 {
                    let mut pos = csv::Position::new();
                    pos.set_byte(offset).set_line(line as u64);
                    reader.seek(pos).map_err(|e| csv_error(ctx(), e))?;
                }
                Reader::Csv {
                    reader,
                    decoder: CsvDecoder::try_new(self.data_schema.clone(), &headers)?,
                    records: Vec::new(),
                }
            }
            FileFormat::Parquet => Reader::Parquet {
                rows: ParquetRows::open(
                    &path,
                    self.data_schema.clone(),
                    self.batch_size,
                    offset as usize,
                )
                .map_err(|e| ConnectorError::Other(format!("table '{}': {e}", self.table)))?,
                read: offset,
            },
        };
        self.open = Some(OpenFile {
            path,
            reader,
            rejects: 0,
            first_reject: None,
        });
        Ok(())
    }

    /// Reads up to one batch from the open file; `true` when the file is exhausted.
    fn read_batch(&mut self) -> Result<(Decoded, bool), ConnectorError> {
        let batch_size = self.batch_size;
        let Some(open) = self.open.as_mut() else {
            return Ok((Decoded::default(), true));
        };
        let ctx = || format!("table '{}': reading '{}'", self.table, open.path.display());
        match &mut open.reader {
            Reader::Json {
                reader,
                offset,
                line,
                decoder,
                buf,
                spans,
            } => {
                buf.clear();
                spans.clear();
                let mut eof = false;
                while spans.len() < batch_size {
                    let start = buf.len();
                    let n = reader
                        .read_until(b'\n', buf)
                        .map_err(|e| ConnectorError::io(ctx(), e))?;
                    if n == 0 {
                        eof = true;
                        break;
                    }
                    *offset += n as u64;
                    spans.push((*line, start, buf.len()));
                    *line += 1;
                }
                self.metrics.bytes.add(buf.len() as u64);
                let d = decoder.decode_lines(spans.iter().map(|&(l, s, e)| (l, &buf[s..e])))?;
                Ok((d, eof))
            }
            Reader::Csv {
                reader,
                decoder,
                records,
            } => {
                let mut n = 0;
                let mut eof = false;
                let mut read_errors = Vec::new();
                while n < batch_size {
                    if records.len() <= n {
                        records.push(ByteRecord::new());
                    }
                    match reader.read_byte_record(&mut records[n]) {
                        Ok(true) => n += 1,
                        Ok(false) => {
                            eof = true;
                            break;
                        }
                        Err(e) if e.is_io_error() => return Err(csv_error(ctx(), e)),
                        Err(e) => read_errors.push(Reject {
                            line: e.position().map_or(0, |p| p.line() as usize),
                            reason: format!("invalid CSV: {e}"),
                            raw: Vec::new(),
                        }),
                    }
                }
                let mut d = decoder.decode_records(records[..n].iter())?;
                if !read_errors.is_empty() {
                    d.rejects.extend(read_errors);
                    d.rejects.sort_by_key(|r| r.line);
                }
                Ok((d, eof))
            }
            Reader::Parquet { rows, read } => {
                let batch = rows
                    .next_batch()
                    .map_err(|e| ConnectorError::Other(format!("table '{}': {e}", self.table)))?;
                let eof = batch.is_none();
                if let Some(b) = &batch {
                    *read += b.num_rows() as u64;
                    self.metrics.bytes.add(b.get_array_memory_size() as u64);
                }
                Ok((
                    Decoded {
                        batch,
                        rejects: Vec::new(),
                    },
                    eof,
                ))
            }
        }
    }

    /// `batch` (the data columns of file `index`) with the partition columns added from
    /// the file's directory names.
    fn with_partitions(
        &self,
        batch: RecordBatch,
        index: usize,
    ) -> Result<RecordBatch, ConnectorError> {
        if self.partition_cols.is_empty() {
            return Ok(batch);
        }
        let rows = batch.num_rows();
        let values = self
            .partitions
            .get(index)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut data = batch.columns().iter();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (i, field) in self.schema.fields().iter().enumerate() {
            let Some(k) = self.partition_cols.iter().position(|&c| c == i) else {
                columns.extend(data.next().cloned());
                continue;
            };
            let value = values.get(k).cloned().flatten();
            let text: ArrayRef = Arc::new(StringArray::from(vec![value.clone(); rows]));
            let strict = CastOptions {
                safe: false,
                ..CastOptions::default()
            };
            let column = cast_with_options(&text, field.data_type(), &strict).map_err(|e| {
                ConnectorError::Other(format!(
                    "table '{}': partition directory {}={} of '{}' is not a {}: {e}",
                    self.table,
                    field.name(),
                    value.unwrap_or_default(),
                    self.files
                        .get(index)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    runnel_common::types::sql_name(field.data_type())
                ))
            })?;
            columns.push(column);
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    fn handle_rejects(&mut self, rejects: &[Reject]) -> Result<(), ConnectorError> {
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        if rejects.is_empty() {
            return Ok(());
        }
        if open.first_reject.is_none() {
            open.first_reject = rejects
                .first()
                .map(|r| format!("{}:{}: {}", open.path.display(), r.line, r.reason));
        }
        open.rejects += rejects.len() as u64;
        let letters: Vec<DeadLetter> = rejects
            .iter()
            .map(|r| {
                DeadLetter::new(
                    Location::File {
                        path: open.path.clone(),
                        line: r.line,
                    },
                    r.reason.clone(),
                    r.raw.clone(),
                )
            })
            .collect();
        self.dead.write(&letters)
    }

    /// Closes the current file (warning once about its rejects) and moves to this subtask's next one.
    fn close_file(&mut self) {
        if let Some(open) = self.open.take()
            && open.rejects > 0
        {
            tracing::warn!(
                table = %self.table,
                file = %open.path.display(),
                rejected = open.rejects,
                dead_letters = %self.dead.target(),
                "{} record(s) rejected; first: {}",
                open.rejects,
                open.first_reject.unwrap_or_default()
            );
        }
        self.next_file += self.parallelism;
    }
}

fn csv_error(context: String, e: csv::Error) -> ConnectorError {
    ConnectorError::Other(format!("{context}: {e}"))
}

#[async_trait]
impl Source for FileSource {
    async fn poll(&mut self) -> Result<SourcePoll, ConnectorError> {
        let started = Instant::now();
        loop {
            if self.open.is_none() {
                if self.next_file >= self.files.len() {
                    return Ok(SourcePoll::End);
                }
                self.open_file(self.next_file, 0, 1)?;
            }
            let index = self.next_file;
            let (decoded, eof) = self.read_batch()?;
            self.handle_rejects(&decoded.rejects)?;
            if eof {
                self.close_file();
            }
            if let Some(batch) = decoded.batch {
                let batch = self.with_partitions(batch, index)?;
                self.metrics.rows.add(batch.num_rows() as u64);
                return Ok(SourcePoll::Batch(batch));
            }
            if started.elapsed() > POLL_BUDGET {
                return Ok(SourcePoll::Pending);
            }
        }
    }

    fn position(&self) -> Option<serde_json::Value> {
        let (offset, line) = match self.open.as_ref().map(|o| &o.reader) {
            Some(Reader::Json { offset, line, .. }) => (*offset, *line as u64),
            Some(Reader::Csv { reader, .. }) => {
                (reader.position().byte(), reader.position().line())
            }
            Some(Reader::Parquet { read, .. }) => (*read, 0),
            None => (0, 1),
        };
        Some(json!({ "file": self.next_file, "offset": offset, "line": line }))
    }

    async fn seek(&mut self, position: &serde_json::Value) -> Result<(), ConnectorError> {
        let field = |k: &str| position.get(k).and_then(serde_json::Value::as_u64);
        let (Some(file), Some(offset)) = (field("file"), field("offset")) else {
            return Err(ConnectorError::Other(format!(
                "table '{}': cannot resume the file source from position {position}",
                self.table
            )));
        };
        let line = field("line").unwrap_or(1) as usize;
        self.open = None;
        self.next_file = file as usize;
        if self.next_file < self.files.len() {
            self.open_file(self.next_file, offset, line)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema};
    use runnel_common::Options;

    use super::*;
    use crate::format::json::encode_to_string;

    fn spec(dir: &Path, extra: &[(&str, &str)]) -> TableSpec {
        let mut opts = vec![("connector".to_string(), "file".to_string())];
        opts.push(("path".into(), dir.display().to_string()));
        opts.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        TableSpec {
            line: 0,
            name: "t".into(),
            schema: Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)])),
            watermark: None,
            metadata: Vec::new(),
            primary_key: Vec::new(),
            partition_keys: Vec::new(),
            options: Options::new(opts),
        }
    }

    fn ctx(
        subtask: usize,
        parallelism: usize,
        metrics: &ConnectorMetrics,
        batch: usize,
    ) -> SourceContext {
        SourceContext {
            subtask,
            parallelism,
            metrics: metrics.clone(),
            data_dir: PathBuf::from("."),
            batch_size: batch,
            log: None,
            checkpointing: false,
            dead_letters: crate::dead_letters::DeadLetters::new(None, None, true),
            task: None,
        }
    }

    async fn drain(s: &mut Box<dyn Source>) -> String {
        let mut out = String::new();
        loop {
            match s.poll().await.unwrap() {
                SourcePoll::Batch(b) => out.push_str(&encode_to_string(&b).unwrap()),
                SourcePoll::Pending => {}
                SourcePoll::End => return out,
            }
        }
    }

    #[tokio::test]
    async fn resumes_from_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("in.jsonl");
        std::fs::write(&f, "{\"k\":1}\n{\"k\":2}\n{\"k\":3}\n").unwrap();
        let m = ConnectorMetrics::default();
        let mut a = build(&spec(&f, &[]), vec![ctx(0, 1, &m, 1)])
            .unwrap()
            .remove(0);
        assert!(matches!(a.poll().await.unwrap(), SourcePoll::Batch(_)));
        let pos = a.position().unwrap();
        assert_eq!(pos, json!({"file": 0, "offset": 8, "line": 2}));
        let mut b = build(&spec(&f, &[]), vec![ctx(0, 1, &m, 10)])
            .unwrap()
            .remove(0);
        b.seek(&pos).await.unwrap();
        assert_eq!(drain(&mut b).await, "{\"k\":2}\n{\"k\":3}\n");
    }

    #[tokio::test]
    async fn csv_resumes_from_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("in.csv");
        std::fs::write(&f, "k\n1\n2\n3\n").unwrap();
        let m = ConnectorMetrics::default();
        let s = spec(&f, &[("format", "csv")]);
        let mut a = build(&s, vec![ctx(0, 1, &m, 2)]).unwrap().remove(0);
        assert!(matches!(a.poll().await.unwrap(), SourcePoll::Batch(_)));
        let pos = a.position().unwrap();
        let mut b = build(&s, vec![ctx(0, 1, &m, 10)]).unwrap().remove(0);
        b.seek(&pos).await.unwrap();
        assert_eq!(drain(&mut b).await, "{\"k\":3}\n");
    }
}
