//! SQL text → [`PipelineGraph`].
//!
//! A script holds Flink SQL statements: `CREATE TABLE … WITH (…)`,
//! `CREATE VIEW`, `INSERT INTO … SELECT` and `SET`. The [`Planner`] parses
//! them with [`FlinkDialect`], plans each query with DataFusion's SQL planner
//! and type coercion, and lowers the logical plan to streaming nodes whose
//! expressions are vectorized DataFusion physical expressions.
//!
//! ```
//! let graph = runnel_sql::Planner::new().plan(
//!     "CREATE TABLE src (id BIGINT) WITH (connector = 'file', path = 'in.jsonl');
//!      CREATE TABLE dst (id BIGINT) WITH (connector = 'blackhole');
//!      INSERT INTO dst SELECT id + 1 FROM src WHERE id > 0;",
//! ).unwrap();
//! assert_eq!(graph.nodes.len(), 3);
//! ```
#![warn(missing_docs)]

pub mod catalog;
pub mod ddl;
pub mod dialect;
pub mod error;
mod field_names;
pub mod functions;
pub mod graph;
mod group_window;
mod lookup;
mod lower;
mod unnest;
pub mod window;

pub use ddl::parse_script;

use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use datafusion_expr::{LogicalPlan, ScalarUDF};
use datafusion_optimizer::Analyzer;
use datafusion_sql::planner::{ParserOptions, SqlToRel};
pub use dialect::FlinkDialect;
pub use error::SqlError;
pub use graph::{
    GroupAggSpec, GroupCol, Input, IntervalBounds, JoinKind, JoinSpec, LookupJoinSpec, MiniBatch,
    Node, NodeSpec, NormalizeSpec, OnViolation, OverFrame, OverSpec, Partitioning, PipelineGraph,
    ProjectSpec, QualitySpec, RankFunction, RankSpec, RuleSpec, UnnestSpec, WindowAggSpec,
    WindowAssignSpec, WindowCols, WindowJoinSpec, WindowKind,
};
use runnel_common::{Options, TableSpec, WatermarkSpec};

use crate::catalog::{Catalog, Relation};
pub use crate::catalog::{FunctionProvider, ProvidedFunction};
pub use crate::ddl::Statement;
use crate::ddl::TableDef;
use crate::error::clean_datafusion_message;

/// Checks a declared table's connector and options while the script is planned, so a
/// mistake is reported with the line and column of the option it is about.
pub trait TableCheck: Send + Sync {
    /// `Err((key, message))`: what is wrong, and the option key it is about (if one).
    fn check(&self, spec: &TableSpec) -> Result<(), (Option<String>, String)>;

    /// Whether the sink table `spec` can take an updating (changelog) result. An
    /// append-only sink fed one is a planning error naming the updating operator.
    fn accepts_updates(&self, _spec: &TableSpec) -> bool {
        true
    }

    /// Whether the source table `spec` reads upserts keyed by its PRIMARY KEY (a new
    /// value per key, or a deletion naming only the key), which the plan turns into a
    /// changelog (`upsert-kafka`).
    fn reads_upserts(&self, _spec: &TableSpec) -> bool {
        false
    }
}

/// Finds a table a query names but the script does not declare: `runnel query`'s
/// shorthand for what runnel stored (a log topic, a Parquet directory, a Delta table).
pub trait TableResolver: Send + Sync {
    /// The table named `name` (its schema read from the data), `Ok(None)` when there is
    /// none by that name, `Err` when there is one but it cannot be read.
    fn resolve(&self, name: &str) -> Result<Option<TableSpec>, String>;
}

/// Where a script's bare `SELECT` goes, and what is left to do with its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryResult {
    /// The implicit sink table that collects the rows.
    pub table: String,
    /// The outermost `ORDER BY`, applied to the collected rows: (column, descending,
    /// nulls first).
    pub order_by: Vec<(usize, bool, bool)>,
    /// `OFFSET n`.
    pub offset: usize,
    /// `LIMIT n`.
    pub limit: Option<usize>,
}

/// The name of the implicit sink table of a bare `SELECT`.
pub const QUERY_RESULT_TABLE: &str = "query_result";

/// Plans runnel SQL scripts.
#[derive(Default)]
pub struct Planner {
    catalog: Catalog,
    blocking: std::collections::HashSet<String>,
    table_check: Option<Arc<dyn TableCheck>>,
    resolver: Option<Arc<dyn TableResolver>>,
    /// The connector of the implicit sink of a bare `SELECT`; `None`: a bare `SELECT` is
    /// an error.
    query_sink: Option<String>,
}

impl std::fmt::Debug for Planner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planner")
            .field("catalog", &self.catalog)
            .finish_non_exhaustive()
    }
}

impl Planner {
    /// A planner with DataFusion's built-in functions.
    pub fn new() -> Self {
        Self {
            catalog: Catalog::new(),
            blocking: Default::default(),
            table_check: None,
            resolver: None,
            query_sink: None,
        }
    }

    /// Checks every `CREATE TABLE` with `check` as it is planned.
    pub fn with_table_check(mut self, check: Arc<dyn TableCheck>) -> Self {
        self.table_check = Some(check);
        self
    }

    /// Plans a bare `SELECT` as an insert into an implicit table named
    /// [`QUERY_RESULT_TABLE`] with `connector` (an ad-hoc query), and asks `resolver` about
    /// tables a query names that the script does not declare.
    pub fn for_queries(mut self, connector: &str, resolver: Arc<dyn TableResolver>) -> Self {
        self.query_sink = Some(connector.to_string());
        self.resolver = Some(resolver);
        self
    }

    /// Asks `provider` for functions a query calls that are not built in.
    pub fn add_function_provider(&mut self, provider: Arc<dyn FunctionProvider>) {
        self.catalog.add_provider(provider);
    }

    /// Like [`Planner::register_udf`] for a function that blocks for long (image
    /// classification): projections calling it run off the async threads.
    pub fn register_blocking_udf(&mut self, udf: ScalarUDF) {
        self.blocking.insert(udf.name().to_string());
        self.register_udf(udf);
    }

    /// Makes a scalar function (e.g. `classify`) callable from SQL.
    pub fn register_udf(&mut self, udf: ScalarUDF) {
        self.catalog.register_udf(Arc::new(udf));
    }

    /// Plans a whole script. Every `INSERT` becomes part of one graph.
    ///
    /// # Errors
    /// Syntax errors (with line and column), unknown tables, columns,
    /// functions and types, column count or type mismatches on INSERT, and
    /// queries that cannot run on a stream.
    pub fn plan(&mut self, sql: &str) -> Result<PipelineGraph, SqlError> {
        self.plan_statements(ddl::parse_script(sql)?)
    }

    /// Plans statements already parsed with [`parse_script`] (a script is parsed once).
    ///
    /// # Errors
    /// As [`Planner::plan`].
    pub fn plan_statements(
        &mut self,
        statements: Vec<Statement>,
    ) -> Result<PipelineGraph, SqlError> {
        let mut lowerer = lower::Lowerer::new();
        let mut inserts = 0;
        // INSERTs and SETs in script order, lowered once every query is planned: the
        // joins then know which columns the whole script reads.
        enum Step {
            Insert(Box<LogicalPlan>, TableSpec, Option<Vec<String>>, u64, bool),
            Set(String, String),
        }
        let mut steps: Vec<Step> = Vec::new();
        let mut used = lower::used::Used::default();
        let mut result = None;
        for stmt in statements {
            match stmt {
                Statement::CreateTable(mut def) => {
                    let line = def.line;
                    let checks = std::mem::take(&mut def.checks);
                    let computed = self.computed_columns(&mut def)?;
                    let mut spec = table_spec(def)?;
                    if let Some((column, delay_ms)) = computed.as_ref().and_then(|c| c.watermark) {
                        // The column is computed: the source evaluates its expression
                        // (NodeSpec::Source); `column` is its place among all columns.
                        spec.watermark = Some(WatermarkSpec { column, delay_ms });
                    }
                    if let Some(check) = &self.table_check
                        && let Err((key, message)) = check.check(&spec)
                    {
                        let at = key
                            .and_then(|k| spec.options.position(&k))
                            .unwrap_or(runnel_common::Position { line, column: 1 });
                        return Err(SqlError::located(
                            at,
                            format!("CREATE TABLE {}: {message}", spec.name),
                        ));
                    }
                    if self
                        .table_check
                        .as_ref()
                        .is_some_and(|c| c.reads_upserts(&spec))
                    {
                        lowerer.upsert_sources.insert(spec.name.clone());
                    }
                    let schema = computed
                        .as_ref()
                        .map_or_else(|| spec.schema.clone(), |c| c.schema.clone());
                    let name = spec.name.clone();
                    let rules = self.plan_checks(&spec, &schema, checks)?;
                    if !rules.is_empty() {
                        lowerer.checks.insert(name.clone(), rules);
                    }
                    if let Some(c) = computed {
                        lowerer.computed.insert(name.clone(), c);
                    }
                    self.catalog
                        .add(&name, Relation::Table(spec), schema)
                        .map_err(|m| SqlError::at(line, format!("CREATE TABLE {m}")))?;
                }
                Statement::CreateView { name, query, line } => {
                    self.resolve_tables(&query, line)?;
                    let plan = self.plan_query(*query, line)?;
                    let schema = Arc::new(plan.schema().as_arrow().clone());
                    self.catalog
                        .add(&name, Relation::View(Arc::new(plan)), schema)
                        .map_err(|m| SqlError::at(line, format!("CREATE VIEW {m}")))?;
                }
                Statement::Insert {
                    sink,
                    columns,
                    query,
                    line,
                } => {
                    let spec = match self.catalog.get(&sink).map(|r| &r.relation) {
                        Some(Relation::Table(spec)) => spec.clone(),
                        Some(Relation::View(_) | Relation::Window(_) | Relation::Lookup(_)) => {
                            return Err(SqlError::at(
                                line,
                                format!("INSERT INTO {sink}: '{sink}' is a view, not a table"),
                            ));
                        }
                        None => {
                            return Err(SqlError::at(
                                line,
                                format!(
                                    "INSERT INTO {sink}: unknown table '{sink}'; declared tables: {}",
                                    if self.catalog.names().is_empty() {
                                        "none".into()
                                    } else {
                                        self.catalog.names().join(", ")
                                    }
                                ),
                            ));
                        }
                    };
                    self.resolve_tables(&query, line)?;
                    let mut query = query;
                    field_names::name_insert_columns(&mut query);
                    let plan = self.plan_query(*query, line)?;
                    let accepts_updates = self
                        .table_check
                        .as_ref()
                        .is_none_or(|c| c.accepts_updates(&spec));
                    used.add(&plan);
                    steps.push(Step::Insert(
                        Box::new(plan),
                        spec,
                        columns,
                        line,
                        accepts_updates,
                    ));
                    inserts += 1;
                }
                Statement::Query { mut query, line } => {
                    let Some(connector) = self.query_sink.clone() else {
                        return Err(SqlError::at(
                            line,
                            "a SELECT without INSERT INTO has nowhere to send its rows in a \
                             pipeline: write INSERT INTO <table> SELECT …, or run it as an \
                             ad-hoc query with `runnel query -f <script>`",
                        ));
                    };
                    if result.is_some() {
                        return Err(SqlError::at(
                            line,
                            "a query script runs one SELECT; this is the second",
                        ));
                    }
                    self.resolve_tables(&query, line)?;
                    let order_by = query.order_by.take();
                    let limit = query.limit_clause.take();
                    let plan = self.plan_query(*query, line)?;
                    let schema = Arc::new(Schema::new(
                        plan.schema()
                            .fields()
                            .iter()
                            .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                            .collect::<Vec<_>>(),
                    ));
                    let (offset, limit) = query_limit(limit, line)?;
                    result = Some(QueryResult {
                        table: QUERY_RESULT_TABLE.into(),
                        order_by: query_order(order_by, &schema, line)?,
                        offset,
                        limit,
                    });
                    let spec = TableSpec {
                        name: QUERY_RESULT_TABLE.into(),
                        schema,
                        watermark: None,
                        options: Options::new([("connector".to_string(), connector)]),
                        line,
                        metadata: Vec::new(),
                        primary_key: Vec::new(),
                        partition_keys: Vec::new(),
                    };
                    used.add(&plan);
                    steps.push(Step::Insert(Box::new(plan), spec, None, line, true));
                    inserts += 1;
                }
                Statement::Set { key, value, .. } => steps.push(Step::Set(key, value)),
            }
        }
        for name in self.catalog.names() {
            if let Some(Relation::View(view)) = self.catalog.get(name).map(|r| &r.relation) {
                used.add(view);
            }
        }
        lowerer.used = Some(used);
        for step in steps {
            match step {
                Step::Insert(plan, spec, columns, line, accepts_updates) => {
                    lowerer.insert(&plan, &spec, columns.as_deref(), line, accepts_updates)?
                }
                Step::Set(key, value) => {
                    lowerer.graph.settings.insert(key, value);
                }
            }
        }
        if inserts == 0 {
            return Err(SqlError::at(
                1,
                if self.query_sink.is_some() {
                    "a query script ends with a SELECT …; this one has none"
                } else {
                    "the script has no INSERT INTO statement, so there is nothing to run"
                },
            ));
        }
        let mut graph = lowerer.graph;
        graph.query = result;
        self.blocking.extend(self.catalog.blocking_functions());
        for node in &mut graph.nodes {
            if let NodeSpec::Project(p) = &mut node.spec {
                let mut called: Vec<&String> = self
                    .blocking
                    .iter()
                    .filter(|f| p.calls_any(&std::iter::once((*f).clone()).collect()))
                    .collect();
                p.blocking = !called.is_empty();
                if p.blocking {
                    // Name the expensive step in the summary, the page and the metrics.
                    called.sort();
                    let names: Vec<&str> = called.iter().map(|s| s.as_str()).collect();
                    node.label = format!("{} ({})", node.label, names.join(", "));
                }
            }
        }
        Ok(graph)
    }

    /// Types a table's computed columns (`name AS expr`) over its other columns and
    /// takes them out of `def`, which keeps what the connector reads. A `WATERMARK FOR`
    /// a computed column moves into the result.
    fn computed_columns(
        &self,
        def: &mut ddl::TableDef,
    ) -> Result<Option<lower::Computed>, SqlError> {
        use datafusion_common::DFSchema;
        use datafusion_expr::{EmptyRelation, Expr, LogicalPlanBuilder};
        if def.columns.iter().all(|c| c.computed.is_none()) {
            return Ok(None);
        }
        let line = def.line;
        let err =
            |message: String| SqlError::at(line, format!("CREATE TABLE {}: {message}", def.name));
        let physical = Schema::new(
            def.columns
                .iter()
                .filter(|c| c.computed.is_none())
                .map(|c| Field::new(&c.name, c.data_type.clone(), true))
                .collect::<Vec<_>>(),
        );
        let physical =
            Arc::new(DFSchema::try_from(physical).map_err(|e| err(clean_datafusion_message(&e)))?);
        let options = ParserOptions::new().with_enable_ident_normalization(false);
        let sql_to_rel = SqlToRel::new_with_options(&self.catalog, options);
        let mut exprs = Vec::new();
        for c in &def.columns {
            exprs.push(match &c.computed {
                None => Expr::Column(datafusion_common::Column::from_name(&c.name)),
                Some(sql) => sql_to_rel
                    .sql_to_expr(sql.clone(), &physical, &mut Default::default())
                    .map_err(|e| {
                        err(format!(
                            "computed column '{}' AS {sql}: {}",
                            c.name,
                            clean_datafusion_message(&e)
                        ))
                    })?
                    .alias(&c.name),
            });
        }
        let input = LogicalPlan::EmptyRelation(EmptyRelation {
            produce_one_row: false,
            schema: physical.clone(),
        });
        let plan = LogicalPlanBuilder::from(input)
            .project(exprs)
            .and_then(|b| b.build())
            .map_err(|e| err(clean_datafusion_message(&e)))?;
        let config = datafusion_expr::planner::ContextProvider::options(&self.catalog);
        let plan = Analyzer::new()
            .execute_and_check(plan, config, |_, _| {})
            .map_err(|e| err(clean_datafusion_message(&e)))?;
        let LogicalPlan::Projection(projection) = &plan else {
            return Err(err(
                "runnel bug: computed columns did not plan as a projection".into(),
            ));
        };
        let schema = Arc::new(plan.schema().as_arrow().clone());
        if let Some(c) = def
            .columns
            .iter()
            .find(|c| c.computed.is_some() && def.primary_key.contains(&c.name))
        {
            return Err(err(format!(
                "PRIMARY KEY: '{}' is a computed column; a key is made of declared columns",
                c.name
            )));
        }
        let mut event_time = None;
        if let Some((col, _)) = &def.watermark
            && let Some(i) = def
                .columns
                .iter()
                .position(|c| &c.name == col && c.computed.is_some())
        {
            let dt = schema.field(i).data_type();
            if !matches!(dt, arrow::datatypes::DataType::Timestamp(_, _)) {
                return Err(err(format!(
                    "WATERMARK FOR {col}: the event-time column must be TIMESTAMP(3) or TIMESTAMP_LTZ(3), not {}",
                    runnel_common::types::sql_name(dt)
                )));
            }
            event_time = Some(i);
        }
        // The source computes these event times (see `NodeSpec::Source`).
        let watermark = match event_time {
            Some(i) => def.watermark.take().map(|(_, d)| (i, d)),
            None => None,
        };
        def.columns.retain(|c| c.computed.is_none());
        Ok(Some(lower::Computed {
            physical,
            exprs: projection.expr.clone(),
            schema,
            watermark,
        }))
    }

    /// Types a table's rules over its columns (computed ones included) and reads their
    /// actions from `'quality.on-violation'` (the table's) and
    /// `'quality.on-violation.<rule>'` (one rule's).
    fn plan_checks(
        &self,
        spec: &TableSpec,
        schema: &arrow::datatypes::SchemaRef,
        checks: Vec<ddl::CheckDef>,
    ) -> Result<Vec<lower::quality::Check>, SqlError> {
        use datafusion_common::DFSchema;
        use datafusion_expr::{EmptyRelation, LogicalPlanBuilder};
        let table = &spec.name;
        let option_at = |key: &str| {
            spec.options
                .position(key)
                .unwrap_or(runnel_common::Position {
                    line: spec.line,
                    column: 1,
                })
        };
        // Every `quality.*` option names something that exists.
        for (key, value) in spec.options.iter() {
            let Some(rest) = key.strip_prefix("quality.") else {
                continue;
            };
            let rule = match rest.strip_prefix("on-violation") {
                Some("") => None,
                Some(r) if r.starts_with('.') => Some(&r[1..]),
                _ => {
                    return Err(SqlError::located(
                        option_at(key),
                        format!(
                            "table '{table}': unknown option '{key}'; the quality options are \
                             'quality.on-violation' and 'quality.on-violation.<rule>'"
                        ),
                    ));
                }
            };
            if let Err(m) = OnViolation::parse(value) {
                return Err(SqlError::located(
                    option_at(key),
                    format!("table '{table}': option '{key}': {m}"),
                ));
            }
            if let Some(rule) = rule
                && !checks.iter().any(|c| c.name.eq_ignore_ascii_case(rule))
            {
                let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
                return Err(SqlError::located(
                    option_at(key),
                    format!(
                        "table '{table}': option '{key}' names no rule of the table{}",
                        if names.is_empty() {
                            " (it declares no CHECK or NOT NULL)".to_string()
                        } else {
                            format!(
                                "; its rules: {}{}",
                                names.join(", "),
                                runnel_common::options::did_you_mean(rule, names.iter().copied())
                            )
                        }
                    ),
                ));
            }
        }
        if checks.is_empty() {
            return Ok(Vec::new());
        }
        let df = Arc::new(
            DFSchema::try_from(schema.as_ref().clone())
                .map_err(|e| SqlError::at(spec.line, clean_datafusion_message(&e)))?,
        );
        let options = ParserOptions::new().with_enable_ident_normalization(false);
        let sql_to_rel = SqlToRel::new_with_options(&self.catalog, options);
        let config = datafusion_expr::planner::ContextProvider::options(&self.catalog);
        let mut out = Vec::with_capacity(checks.len());
        for c in checks {
            let err = |m: String| {
                SqlError::located(
                    c.at,
                    format!("table '{table}', rule '{}' {}: {m}", c.name, c.text),
                )
            };
            let expr = sql_to_rel
                .sql_to_expr(c.expr.clone(), &df, &mut Default::default())
                .map_err(|e| err(clean_datafusion_message(&e)))?;
            if expr.contains_outer() || has_aggregate(&expr) {
                return Err(err(
                    "a rule reads one row: no aggregates or sub-queries".into()
                ));
            }
            // Typed (coerced) the way a query's expressions are.
            let plan = LogicalPlanBuilder::from(LogicalPlan::EmptyRelation(EmptyRelation {
                produce_one_row: false,
                schema: df.clone(),
            }))
            .project(vec![expr.alias("rule")])
            .and_then(|b| b.build())
            .map_err(|e| err(clean_datafusion_message(&e)))?;
            let plan = Analyzer::new()
                .execute_and_check(plan, config, |_, _| {})
                .map_err(|e| err(clean_datafusion_message(&e)))?;
            let LogicalPlan::Projection(p) = &plan else {
                return Err(err("runnel bug: a rule did not plan as a projection".into()));
            };
            let typed = p.expr[0].clone().unalias();
            let ty = plan.schema().field(0).data_type();
            if !matches!(
                ty,
                arrow::datatypes::DataType::Boolean | arrow::datatypes::DataType::Null
            ) {
                return Err(err(format!(
                    "a rule is a condition (BOOLEAN), this one gives {}",
                    runnel_common::types::sql_name(ty)
                )));
            }
            let mut columns: Vec<usize> = typed
                .column_refs()
                .iter()
                .filter_map(|col| schema.index_of(&col.name).ok())
                .collect();
            columns.sort_unstable();
            columns.dedup();
            let key = format!("quality.on-violation.{}", c.name.to_ascii_lowercase());
            let own = spec
                .options
                .get(&key)
                .or_else(|| spec.options.get("quality.on-violation"))
                .and_then(|v| OnViolation::parse(v).ok());
            out.push(lower::quality::Check {
                name: c.name,
                text: c.text,
                expr: typed,
                columns,
                action: own,
            });
        }
        Ok(out)
    }

    /// Declares the tables `query` reads that neither the script nor a `WITH` clause
    /// names, as the resolver finds them.
    fn resolve_tables(&mut self, query: &sqlparser::ast::Query, line: u64) -> Result<(), SqlError> {
        use sqlparser::ast::{Visit, Visitor};
        use std::ops::ControlFlow;
        let Some(resolver) = self.resolver.clone() else {
            return Ok(());
        };
        #[derive(Default)]
        struct Names {
            ctes: std::collections::HashSet<String>,
            tables: Vec<String>,
        }
        impl Visitor for Names {
            type Break = ();
            fn pre_visit_query(&mut self, q: &sqlparser::ast::Query) -> ControlFlow<()> {
                for cte in q.with.iter().flat_map(|w| &w.cte_tables) {
                    self.ctes.insert(cte.alias.name.value.clone());
                }
                ControlFlow::Continue(())
            }
            fn pre_visit_relation(&mut self, name: &sqlparser::ast::ObjectName) -> ControlFlow<()> {
                let parts: Vec<String> = name
                    .0
                    .iter()
                    .map(|p| {
                        p.as_ident()
                            .map_or_else(|| p.to_string(), |i| i.value.clone())
                    })
                    .collect();
                self.tables.push(parts.join("."));
                ControlFlow::Continue(())
            }
        }
        let mut names = Names::default();
        let _ = query.visit(&mut names);
        for name in names.tables {
            if names.ctes.contains(&name) || self.catalog.get(&name).is_some() {
                continue;
            }
            let spec = match resolver.resolve(&name) {
                Ok(Some(spec)) => spec,
                Ok(None) => continue,
                Err(message) => {
                    return Err(SqlError::at(line, format!("table '{name}': {message}")));
                }
            };
            if let Some(check) = &self.table_check
                && let Err((_, message)) = check.check(&spec)
            {
                return Err(SqlError::at(line, format!("table '{name}': {message}")));
            }
            let schema = spec.schema.clone();
            self.catalog
                .add(&name, Relation::Table(spec), schema)
                .map_err(|m| SqlError::at(line, m))?;
        }
        Ok(())
    }

    fn plan_query(
        &self,
        mut query: sqlparser::ast::Query,
        line: u64,
    ) -> Result<LogicalPlan, SqlError> {
        field_names::alias_fields(&mut query);
        group_window::rewrite(&mut query).map_err(|message| SqlError::Plan { line, message })?;
        let options = ParserOptions::new().with_enable_ident_normalization(false);
        let sql_to_rel = SqlToRel::new_with_options(&self.catalog, options);
        let plan = sql_to_rel
            .sql_statement_to_plan(sqlparser::ast::Statement::Query(Box::new(query)))
            .map_err(|e| SqlError::Plan {
                line,
                message: self
                    .catalog
                    .take_provider_error()
                    .unwrap_or_else(|| clean_datafusion_message(&e)),
            })?;
        let config = datafusion_expr::planner::ContextProvider::options(&self.catalog);
        let plan = Analyzer::new()
            .execute_and_check(plan, config, |_, _| {})
            .map_err(|e| SqlError::Plan {
                line,
                message: clean_datafusion_message(&e),
            })?;
        functions::check_literal_patterns(&plan)
            .map_err(|message| SqlError::Plan { line, message })?;
        // `x IN (SELECT …)` / `EXISTS (…)` become semi and anti joins.
        let plan = datafusion_optimizer::Optimizer::with_rules(vec![Arc::new(
            datafusion_optimizer::decorrelate_predicate_subquery::DecorrelatePredicateSubquery::new(
            ),
        )])
        .optimize(
            plan,
            &datafusion_optimizer::OptimizerContext::new(),
            |_, _| {},
        )
        .map_err(|e| SqlError::Plan {
            line,
            message: clean_datafusion_message(&e),
        })?;
        Ok(plan)
    }
}

/// `LIMIT n [OFFSET m]` of an ad-hoc query, as (offset, limit).
fn query_limit(
    limit: Option<sqlparser::ast::LimitClause>,
    line: u64,
) -> Result<(usize, Option<usize>), SqlError> {
    use sqlparser::ast::{Expr, LimitClause, Value};
    let number = |e: &Expr, what: &str| -> Result<usize, SqlError> {
        if let Expr::Value(v) = e
            && let Value::Number(n, _) = &v.value
            && let Ok(n) = n.parse::<usize>()
        {
            return Ok(n);
        }
        Err(SqlError::at(
            line,
            format!("{what} takes a whole number in an ad-hoc query, not {e}"),
        ))
    };
    match limit {
        None => Ok((0, None)),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            if !limit_by.is_empty() {
                return Err(SqlError::at(line, "LIMIT … BY is not supported"));
            }
            let offset = offset.map(|o| number(&o.value, "OFFSET")).transpose()?;
            let limit = limit.map(|l| number(&l, "LIMIT")).transpose()?;
            Ok((offset.unwrap_or(0), limit))
        }
        Some(LimitClause::OffsetCommaLimit { offset, limit }) => {
            Ok((number(&offset, "OFFSET")?, Some(number(&limit, "LIMIT")?)))
        }
    }
}

/// The outermost `ORDER BY` of an ad-hoc query, over its output columns (by name or
/// position): the collected rows are sorted once the query ends.
fn query_order(
    order_by: Option<sqlparser::ast::OrderBy>,
    schema: &Schema,
    line: u64,
) -> Result<Vec<(usize, bool, bool)>, SqlError> {
    use sqlparser::ast::{Expr, OrderByKind, Value};
    let Some(order_by) = order_by else {
        return Ok(Vec::new());
    };
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let exprs = match order_by.kind {
        OrderByKind::Expressions(exprs) => exprs,
        OrderByKind::All(options) => {
            let descending = options.asc == Some(false);
            let nulls_first = options.nulls_first.unwrap_or(descending);
            return Ok((0..names.len())
                .map(|i| (i, descending, nulls_first))
                .collect());
        }
    };
    exprs
        .into_iter()
        .map(|o| {
            let column = match &o.expr {
                Expr::Identifier(i) => names.iter().position(|n| *n == i.value),
                Expr::CompoundIdentifier(parts) => parts
                    .last()
                    .and_then(|i| names.iter().position(|n| *n == i.value)),
                Expr::Value(v) => match &v.value {
                    Value::Number(n, _) => n
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=names.len()).contains(n))
                        .map(|n| n - 1),
                    _ => None,
                },
                _ => None,
            }
            .ok_or_else(|| {
                SqlError::at(
                    line,
                    format!(
                        "ORDER BY {}: an ad-hoc query orders by its output columns, named \
                         ({}) or numbered from 1; give the expression an alias in the \
                         SELECT list and order by that",
                        o.expr,
                        names.join(", ")
                    ),
                )
            })?;
            let descending = o.options.asc == Some(false);
            Ok((
                column,
                descending,
                o.options.nulls_first.unwrap_or(descending),
            ))
        })
        .collect()
}

/// Whether `e` calls an aggregate or window function, or holds a sub-query.
fn has_aggregate(e: &datafusion_expr::Expr) -> bool {
    use datafusion_common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion_expr::Expr as E;
    let mut found = false;
    let _ = e.apply(|e| {
        if matches!(
            e,
            E::AggregateFunction(_)
                | E::WindowFunction(_)
                | E::ScalarSubquery(_)
                | E::Exists(_)
                | E::InSubquery(_)
        ) {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

fn table_spec(def: TableDef) -> Result<TableSpec, SqlError> {
    let fields: Vec<Field> = def
        .columns
        .iter()
        .map(|c| Field::new(&c.name, c.data_type.clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let watermark = match &def.watermark {
        None => None,
        Some((col, delay_ms)) => {
            let column = schema.index_of(col).map_err(|_| {
                SqlError::at(def.line, format!("WATERMARK FOR {col}: no such column"))
            })?;
            if !matches!(
                schema.field(column).data_type(),
                arrow::datatypes::DataType::Timestamp(_, _)
            ) {
                return Err(SqlError::at(
                    def.line,
                    format!(
                        "WATERMARK FOR {col}: the event-time column must be TIMESTAMP(3) or TIMESTAMP_LTZ(3), not {}",
                        runnel_common::types::sql_name(schema.field(column).data_type())
                    ),
                ));
            }
            Some(WatermarkSpec {
                column,
                delay_ms: *delay_ms,
            })
        }
    };
    let options = Options::with_positions(
        def.options
            .into_iter()
            .map(|(k, v, at)| (k.to_ascii_lowercase(), v, at)),
    );
    if options.connector().is_none() {
        return Err(SqlError::at(
            def.line,
            format!(
                "CREATE TABLE {}: WITH (…) needs a 'connector' option, e.g. connector = 'file'",
                def.name
            ),
        ));
    }
    let metadata = def
        .columns
        .iter()
        .enumerate()
        .filter_map(|(column, c)| {
            let (key, is_virtual) = c.metadata.clone()?;
            Some(runnel_common::MetadataColumn {
                column,
                key,
                is_virtual,
            })
        })
        .collect();
    let primary_key = def
        .primary_key
        .iter()
        .filter_map(|c| schema.index_of(c).ok())
        .collect();
    let partition_keys = def
        .partitioned_by
        .iter()
        .filter_map(|c| schema.index_of(c).ok())
        .collect();
    Ok(TableSpec {
        line: def.line,
        name: def.name,
        schema,
        watermark,
        options,
        metadata,
        primary_key,
        partition_keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "CREATE TABLE t (k STRING, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
        WITH (connector = 'file', path = 'in.jsonl');";

    fn kinds(sql: &str) -> Vec<&'static str> {
        let graph = Planner::new()
            .plan(&format!("{SRC}\n{sql}"))
            .expect("plans");
        graph.nodes.iter().map(|n| n.spec.kind()).collect()
    }

    #[test]
    fn insert_columns_may_compute_the_same_name_twice() {
        // Flink maps an INSERT by position; DataFusion would call both columns `ts`.
        let sql =
            "CREATE TABLE o (ts TIMESTAMP(3), d DATE, k STRING) WITH (connector = 'blackhole');
                   INSERT INTO o SELECT ts, CAST(ts AS DATE), k FROM t;";
        assert_eq!(kinds(sql), ["source", "project", "sink"]);
    }

    #[test]
    fn stateless_query_is_source_project_sink() {
        let sql = "CREATE TABLE o (k STRING, v2 DOUBLE) WITH (connector = 'blackhole');
                   INSERT INTO o SELECT k, v * 1.5 FROM t WHERE v > 0;";
        assert_eq!(kinds(sql), ["source", "project", "sink"]);
    }

    #[test]
    fn window_aggregate_is_hash_partitioned_by_its_keys() {
        let sql = "CREATE TABLE o (k STRING, s TIMESTAMP(3), n BIGINT) WITH (connector = 'blackhole');
                   INSERT INTO o SELECT k, window_start, COUNT(*)
                   FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY k, window_start, window_end;";
        let graph = Planner::new()
            .plan(&format!("{SRC}\n{sql}"))
            .expect("plans");
        let agg = graph
            .nodes
            .iter()
            .find(|n| n.spec.kind() == "window-aggregate")
            .expect("aggregate");
        assert_eq!(
            agg.inputs[0].partitioning,
            Partitioning::Hash(vec![0]),
            "{}",
            graph.explain()
        );
        assert!(graph.nodes.iter().any(|n| n.spec.kind() == "window"));
    }

    #[test]
    fn a_primary_key_sink_gets_every_change_of_a_key_on_one_subtask() {
        let graph = Planner::new()
            .plan(&format!(
                "{SRC}\nCREATE TABLE o (v BIGINT, k STRING, PRIMARY KEY (k) NOT ENFORCED) \
                 WITH (connector = 'blackhole');\nINSERT INTO o SELECT v, k FROM t;"
            ))
            .expect("plans");
        let sink = graph.nodes.last().expect("sink");
        assert_eq!(sink.spec.kind(), "sink");
        assert_eq!(
            sink.inputs[0].partitioning,
            Partitioning::Hash(vec![1]),
            "{}",
            graph.explain()
        );
    }

    #[test]
    fn group_by_without_window_is_an_updating_aggregate() {
        let graph = Planner::new()
            .plan(&format!(
                "{SRC}\nCREATE TABLE o (k STRING, n BIGINT) WITH (connector = 'blackhole');\nINSERT INTO o SELECT k, COUNT(*) FROM t GROUP BY k;"
            ))
            .expect("plans");
        let agg = graph
            .nodes
            .iter()
            .find(|n| n.spec.kind() == "aggregate")
            .expect("aggregate");
        assert_eq!(agg.inputs[0].partitioning, Partitioning::Hash(vec![0]));
        assert!(agg.updating.is_some(), "{}", graph.explain());
    }

    #[test]
    fn insert_skips_virtual_metadata_columns_and_refuses_to_write_them() {
        let sink = "CREATE TABLE o (k STRING, p INT METADATA FROM 'partition' VIRTUAL, \
                    ts TIMESTAMP(3) METADATA FROM 'timestamp') WITH (connector = 'blackhole');";
        let graph = Planner::new()
            .plan(&format!(
                "{SRC}\n{sink}\nINSERT INTO o SELECT k, ts FROM t;"
            ))
            .expect("the VIRTUAL column is not written");
        assert!(graph.nodes.iter().any(|n| n.spec.kind() == "sink"));
        let err = Planner::new()
            .plan(&format!(
                "{SRC}\n{sink}\nINSERT INTO o (k, p) SELECT k, 1 FROM t;"
            ))
            .expect_err("a VIRTUAL column is read-only");
        assert!(err.to_string().contains("read-only"), "{err}");
    }

    #[test]
    fn hop_size_must_be_a_multiple_of_the_slide() {
        let err = Planner::new()
            .plan(&format!(
                "{SRC}\nCREATE TABLE o (n BIGINT) WITH (connector = 'blackhole');
                 INSERT INTO o SELECT COUNT(*) FROM TABLE(HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '3' SECOND, INTERVAL '10' SECOND))
                 GROUP BY window_start, window_end;"
            ))
            .unwrap_err();
        assert!(err.to_string().contains("multiple of the slide"), "{err}");
    }
}
