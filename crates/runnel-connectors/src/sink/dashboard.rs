//! `dashboard` sink: keeps the latest rows of a table in memory for the live web page.
//!
//! Each dashboard table is one [`Panel`] in the pipeline's [`Dashboards`]. The sink turns
//! every batch into JSON rows, folds them into the panel's bounded state (the latest
//! `max-rows` rows, upserted by `key` when one is given) and broadcasts them to the
//! server's Server-Sent-Events streams. Nothing here is durable: a dashboard shows what
//! is happening now, it is not a record of what happened (at-least-once: after a restart
//! from a checkpoint, rows since that checkpoint are shown again).
//!
//! ```sql
//! CREATE TABLE live (camera STRING, label STRING, score DOUBLE, image BYTES)
//! WITH (connector = 'dashboard', title = 'Latest frames', view = 'gallery', key = 'camera');
//! ```
//!
//! Views: `table` (latest rows), `timeseries` (`y` over `x`, default `window_end`, one
//! line per `series`), `gallery` (the latest image per `key`: a BYTES column, or the
//! record at `partition`/`offset` of `image.topic` in the log).

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use runnel_common::TableSpec;
use runnel_common::metrics::ConnectorMetrics;
use serde_json::Value;

use crate::descriptor::{self, Connector, Guarantee, OptionDef, OptionType, Resource};
use crate::format::json::JsonEncoder;
use crate::results::MAX_GALLERY_KEYS;
pub use crate::results::{Dashboards, Panel, PanelConfig, PanelImage, View};
use crate::{ConnectorError, Sink, SinkContext};

/// `connector = 'dashboard'`: a live panel on the web page.
pub const CONNECTOR: Connector = Connector {
    name: "dashboard",
    doc: "a live panel on the web page (table, time series or image gallery)",
    options: &[
        OptionDef::new("title", OptionType::Text, "the panel's title").default("<table>"),
        OptionDef::new(
            "view",
            OptionType::Choice(&["table", "timeseries", "gallery"]),
            "how rows are drawn",
        )
        .default("table"),
        OptionDef::new(
            "key",
            OptionType::Column,
            "one row (or image) per value of this column",
        ),
        OptionDef::new(
            "max-rows",
            OptionType::Int {
                min: 1,
                max: u64::MAX,
            },
            "rows (points, images) kept; default 50, 2000 for timeseries, 256 for gallery",
        ),
        OptionDef::new("x", OptionType::Column, "timeseries: the time column"),
        OptionDef::new("y", OptionType::Column, "timeseries: the value column"),
        OptionDef::new(
            "series",
            OptionType::Column,
            "timeseries: one line per value of this column",
        ),
        OptionDef::new(
            "image",
            OptionType::Column,
            "gallery: the BYTES column with the image",
        ),
        OptionDef::new(
            "image.topic",
            OptionType::Text,
            "gallery: a log topic to fetch the image from, by the row's key",
        ),
    ],
    source: None,
    sink: Some(build),
    unbounded: descriptor::never_unbounded,
    guarantee: Guarantee::AtLeastOnce,
    updates: descriptor::takes_updates,
    needs: &[Resource::ResultsHub],
    validate,
    check: descriptor::no_check,
    metadata: &[],
    upserts: false,
    lookup: None,
};

/// The columns named by options must suit their use (images are BYTES, …).
fn validate(spec: &TableSpec) -> Result<(), ConnectorError> {
    build(spec, Vec::new()).map(|_| ())
}

/// A sink subtask feeding one panel.
pub struct DashboardSink {
    panel: Arc<Panel>,
    /// Index of the image column in the input, if the view shows BYTES images.
    image_col: Option<usize>,
    /// (topic, partition column, offset column) for images looked up in the log.
    image_lookup: Option<(Arc<runnel_log::Topic>, usize, usize)>,
    metrics: ConnectorMetrics,
    buf: Vec<u8>,
}

fn option_err(spec: &TableSpec, source: runnel_common::OptionError) -> ConnectorError {
    ConnectorError::Option {
        table: spec.name.clone(),
        source,
    }
}

/// Builds the panel of `spec` and one sink per subtask feeding it.
pub fn build(
    spec: &TableSpec,
    contexts: Vec<SinkContext>,
) -> Result<Vec<Box<dyn Sink>>, ConnectorError> {
    let (config, image_col, image_lookup_cols) = panel_config(spec)?;
    let mut sinks: Vec<Box<dyn Sink>> = Vec::with_capacity(contexts.len());
    for ctx in contexts {
        let panel = ctx.dashboards.register(config.clone());
        let image_lookup = match &image_lookup_cols {
            None => None,
            Some((topic, p, off)) => {
                let log = ctx.log.as_ref().ok_or_else(|| {
                    ConnectorError::Other(format!(
                        "table '{}': 'image.topic' needs the embedded log (run with --listen or \
                         read a log table)",
                        spec.name
                    ))
                })?;
                let t = log.topic(topic).ok_or_else(|| {
                    ConnectorError::Other(format!(
                        "table '{}': 'image.topic' = '{topic}' is not a topic of the log",
                        spec.name
                    ))
                })?;
                Some((t, *p, *off))
            }
        };
        sinks.push(Box::new(DashboardSink {
            panel,
            image_col,
            image_lookup,
            metrics: ctx.metrics,
            buf: Vec::new(),
        }));
    }
    Ok(sinks)
}

/// The panel's settings from the table's options and columns, with the image column
/// and where images are looked up (topic, partition column, offset column).
type PanelParts = (PanelConfig, Option<usize>, Option<(String, usize, usize)>);

fn panel_config(spec: &TableSpec) -> Result<PanelParts, ConnectorError> {
    let o = &spec.options;
    CONNECTOR.check_options(spec)?;
    let (view, max_rows) = view_and_rows(spec)?;
    let schema = &spec.schema;
    let column = |key: &str| -> Result<Option<String>, ConnectorError> {
        match o.get(key) {
            None => Ok(None),
            Some(c) if schema.field_with_name(c).is_ok() => Ok(Some(c.to_string())),
            Some(c) => Err(ConnectorError::Other(format!(
                "table '{}': option '{key}' = '{c}' is not a column; columns: {}",
                spec.name,
                column_names(spec)
            ))),
        }
    };
    let mut key = column("key")?;
    let x = column("x")?;
    let y = column("y")?;
    let series = column("series")?;
    let mut image = column("image")?;
    let image_topic = o.get("image.topic").map(str::to_string);
    let is_bytes = |t: &DataType| {
        matches!(
            t,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView
        )
    };
    if let Some(img) = &image {
        let t = schema
            .field_with_name(img)
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Null);
        if !is_bytes(&t) {
            return Err(ConnectorError::Type {
                table: spec.name.clone(),
                column: img.clone(),
                data_type: runnel_common::types::sql_name(&t),
                reason: "cannot be shown as an image (it must be BYTES)".into(),
            });
        }
    }
    if view == View::Gallery {
        if image.is_none() && image_topic.is_none() {
            image = schema
                .fields()
                .iter()
                .find(|f| is_bytes(f.data_type()))
                .map(|f| f.name().clone());
        }
        if image.is_none() && image_topic.is_none() {
            return Err(ConnectorError::Other(format!(
                "table '{}': a gallery needs an image: a BYTES column, or \
                 'image.topic' with 'partition' and 'offset' columns",
                spec.name
            )));
        }
        if key.is_none() {
            key = schema
                .fields()
                .iter()
                .find(|f| matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8))
                .map(|f| f.name().clone());
        }
        if key.is_none() {
            return Err(ConnectorError::Other(format!(
                "table '{}': a gallery shows one image per key: set key = '<column>'",
                spec.name
            )));
        }
    }
    let y = match (view, y) {
        (View::Timeseries, None) => schema
            .fields()
            .iter()
            .find(|f| f.data_type().is_numeric() && Some(f.name()) != x.as_ref())
            .map(|f| f.name().clone()),
        (_, y) => y,
    };
    if view == View::Timeseries && y.is_none() {
        return Err(ConnectorError::Other(format!(
            "table '{}': a timeseries plots a numeric column: set y = '<column>'",
            spec.name
        )));
    }
    let image_col = image.as_ref().and_then(|c| schema.index_of(c).ok());
    let image_lookup_cols = image_lookup(spec, image_topic.as_deref())?;
    let columns = schema
        .fields()
        .iter()
        .filter(|f| Some(f.name()) != image.as_ref())
        .map(|f| {
            (
                f.name().clone(),
                runnel_common::types::sql_name(f.data_type()),
            )
        })
        .collect();
    // A timeseries draws one line per key unless told otherwise.
    let series = series.or_else(|| (view == View::Timeseries).then(|| key.clone()).flatten());
    let config = PanelConfig {
        name: spec.name.clone(),
        title: o.get("title").unwrap_or(&spec.name).to_string(),
        view,
        key,
        max_rows,
        x: x.or_else(|| (view == View::Timeseries).then(|| "window_end".to_string())),
        y,
        // One line per key unless told otherwise.
        series,
        image,
        image_topic,
        columns,
    };
    Ok((config, image_col, image_lookup_cols))
}

/// Where a gallery's images are looked up in the log: (topic, partition column, offset
/// column), when `image.topic` is set.
fn image_lookup(
    spec: &TableSpec,
    image_topic: Option<&str>,
) -> Result<Option<(String, usize, usize)>, ConnectorError> {
    let schema = &spec.schema;
    Ok(match image_topic {
        None => None,
        Some(topic) => {
            let p = schema.index_of("partition");
            let off = schema.index_of("offset");
            match (p, off) {
                (Ok(p), Ok(off)) => Some((topic.to_string(), p, off)),
                _ => {
                    return Err(ConnectorError::Other(format!(
                        "table '{}': 'image.topic' = '{topic}' needs columns 'partition' and \
                         'offset' to find each frame",
                        spec.name
                    )));
                }
            }
        }
    })
}

/// The panel's view and how many rows it keeps.
fn view_and_rows(spec: &TableSpec) -> Result<(View, usize), ConnectorError> {
    let o = &spec.options;
    let view = match o
        .choice("dashboard", "view", &["table", "timeseries", "gallery"])
        .map_err(|e| option_err(spec, e))?
    {
        Some("timeseries") => View::Timeseries,
        Some("gallery") => View::Gallery,
        _ => View::Table,
    };
    let default_rows = match view {
        View::Table => 50,
        View::Timeseries => 2000,
        View::Gallery => MAX_GALLERY_KEYS,
    };
    let max_rows = o
        .parsed("dashboard", "max-rows", "expected a positive number", |v| {
            v.parse::<usize>().ok().filter(|n| *n > 0)
        })
        .map_err(|e| option_err(spec, e))?
        .unwrap_or(default_rows);
    Ok((view, max_rows))
}

fn column_names(spec: &TableSpec) -> String {
    spec.schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[async_trait]
impl Sink for DashboardSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), ConnectorError> {
        let n = batch.num_rows();
        let mut images: Vec<Option<Vec<u8>>> = vec![None; n];
        let shown = match self.image_col {
            Some(i) => {
                let col = arrow::compute::cast(batch.column(i), &DataType::LargeBinary)?;
                let bytes = col.as_binary::<i64>();
                for (row, img) in images.iter_mut().enumerate() {
                    if bytes.is_valid(row) && !bytes.value(row).is_empty() {
                        *img = Some(bytes.value(row).to_vec());
                    }
                }
                let mut b = batch.clone();
                b.remove_column(i);
                b
            }
            None => batch.clone(),
        };
        if let Some((topic, p, off)) = &self.image_lookup {
            let parts = arrow::compute::cast(batch.column(*p), &DataType::Int64)?;
            let offs = arrow::compute::cast(batch.column(*off), &DataType::Int64)?;
            let (parts, offs) = (
                parts.as_primitive::<arrow::datatypes::Int64Type>(),
                offs.as_primitive::<arrow::datatypes::Int64Type>(),
            );
            for (row, img) in images.iter_mut().enumerate() {
                if parts.is_null(row) || offs.is_null(row) {
                    continue;
                }
                let (Ok(pn), Ok(o)) = (
                    u32::try_from(parts.value(row)),
                    u64::try_from(offs.value(row)),
                ) else {
                    continue;
                };
                // A frame that retention already removed simply has no picture.
                if let Some(part) = topic.partition(pn)
                    && let Ok(recs) = part.read(o, 1, 64 << 20)
                    && let Some(r) = recs.into_iter().next()
                    && r.offset == o
                {
                    *img = Some(r.value);
                }
            }
        }
        self.buf.clear();
        JsonEncoder.encode(&shown, &mut self.buf)?;
        let changelog = runnel_common::changelog::ops(&batch).is_some();
        let mut rows = Vec::with_capacity(n);
        for line in self.buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let mut row: Value = serde_json::from_slice(line)
                .map_err(|e| ConnectorError::Other(format!("dashboard row encoding: {e}")))?;
            // An updating result's row kind travels as `_op` (hidden on the page).
            if changelog
                && let Value::Object(map) = &mut row
                && let Some(op) = map.remove("op")
            {
                map.insert("_op".into(), op);
            }
            rows.push(row);
        }
        self.metrics.rows.add(n as u64);
        self.metrics.bytes.add(self.buf.len() as u64);
        self.panel.push(rows, images);
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BinaryArray, Float64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use runnel_common::Options;

    fn spec(opts: &[(&str, &str)]) -> TableSpec {
        let schema = Arc::new(Schema::new(vec![
            Field::new("camera", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
            Field::new("image", DataType::Binary, true),
        ]));
        let mut pairs = vec![("connector".to_string(), "dashboard".to_string())];
        pairs.extend(opts.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        TableSpec {
            line: 0,
            name: "live".into(),
            schema,
            watermark: None,
            metadata: Vec::new(),
            primary_key: Vec::new(),
            partition_keys: Vec::new(),
            options: Options::new(pairs),
        }
    }

    fn ctx(d: &Arc<Dashboards>) -> SinkContext {
        SinkContext {
            subtask: 0,
            parallelism: 1,
            metrics: ConnectorMetrics::default(),
            data_dir: std::env::temp_dir(),
            log: None,
            checkpoint: None,
            dashboards: d.clone(),
            task: None,
            sealed: None,
            pipeline: None,
        }
    }

    fn batch(spec: &TableSpec, cams: &[&str]) -> RecordBatch {
        let n = cams.len();
        RecordBatch::try_new(
            spec.schema.clone(),
            vec![
                Arc::new(StringArray::from(cams.to_vec())),
                Arc::new(Float64Array::from(vec![0.5; n])),
                Arc::new(BinaryArray::from(vec![&b"\x89PNG\r\n\x1a\nxx"[..]; n])),
            ],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn gallery_upserts_by_key_and_keeps_images() {
        let d = Arc::new(Dashboards::default());
        let s = spec(&[("view", "gallery"), ("key", "camera")]);
        let mut sinks = build(&s, vec![ctx(&d)]).unwrap();
        let panel = d.panel("live").unwrap();
        let (_, mut rx) = panel.subscribe();
        sinks[0].write(batch(&s, &["a", "b", "a"])).await.unwrap();
        let rows = panel.rows();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows.iter().all(|r| r.get("image").is_none()));
        assert!(
            rows[1]["_image"]
                .as_str()
                .unwrap()
                .starts_with("/api/streams/live/images/a?v=")
        );
        assert_eq!(panel.image("a").unwrap().content_type, "image/png");
        assert_eq!(rx.recv().await.unwrap().len(), 3);
        // Key a had versions 1 and 3: a row naming v=1 still gets its own image.
        assert_eq!(panel.image_version("a", Some(1)).unwrap().version, 1);
        assert_eq!(panel.image_version("a", Some(3)).unwrap().version, 3);
        assert_eq!(panel.image_version("a", None).unwrap().version, 3);
        assert_eq!(panel.image_version("a", Some(99)).unwrap().version, 3);
    }

    #[tokio::test]
    async fn table_keeps_the_latest_rows() {
        let d = Arc::new(Dashboards::default());
        let s = spec(&[("max-rows", "2")]);
        let mut sinks = build(&s, vec![ctx(&d)]).unwrap();
        sinks[0].write(batch(&s, &["a", "b", "c"])).await.unwrap();
        let rows = d.panel("live").unwrap().rows();
        let cams: Vec<_> = rows.iter().map(|r| r["camera"].as_str().unwrap()).collect();
        assert_eq!(cams, ["b", "c"]);
    }

    #[tokio::test]
    async fn an_updating_result_replaces_and_removes_rows() {
        use runnel_common::changelog::{RowKind, attach};
        let d = Arc::new(Dashboards::default());
        let s = spec(&[]);
        let mut sinks = build(&s, vec![ctx(&d)]).unwrap();
        let kinds = |k: &[RowKind]| -> arrow::array::ArrayRef {
            Arc::new(arrow::array::Int8Array::from_iter_values(
                k.iter().map(|x| *x as i8),
            ))
        };
        let b = batch(&s, &["a", "b"]);
        let b = attach(&b, kinds(&[RowKind::Insert, RowKind::Insert])).unwrap();
        sinks[0].write(b).await.unwrap();
        let b = batch(&s, &["a"]);
        let b = attach(&b, kinds(&[RowKind::Delete])).unwrap();
        sinks[0].write(b).await.unwrap();
        let rows = d.panel("live").unwrap().rows();
        let cams: Vec<_> = rows.iter().map(|r| r["camera"].as_str().unwrap()).collect();
        assert_eq!(cams, ["b"]);
    }

    #[test]
    fn bad_options_are_named() {
        let d = Arc::new(Dashboards::default());
        let e = build(&spec(&[("view", "pie")]), vec![ctx(&d)])
            .err()
            .unwrap();
        assert!(e.to_string().contains("view"), "{e}");
        let e = build(&spec(&[("key", "nope")]), vec![ctx(&d)])
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("'nope' of connector 'dashboard': not a column"),
            "{e}"
        );
    }
}
