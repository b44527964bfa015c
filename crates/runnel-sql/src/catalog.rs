//! Tables, views and functions known while planning: DataFusion's
//! `ContextProvider`, backed by the script's DDL.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, FieldRef, SchemaRef};
use datafusion_common::config::ConfigOptions;
use datafusion_common::{Result as DfResult, TableReference, plan_err};
use datafusion_expr::planner::{ContextProvider, ExprPlanner, RelationPlanner};
use datafusion_expr::{
    AggregateUDF, HigherOrderUDF, LogicalPlan, ScalarUDF, TableSource, WindowUDF,
};
use runnel_common::TableSpec;

/// What a name in FROM refers to.
#[derive(Debug, Clone)]
pub enum Relation {
    /// A window table function over a table or view.
    Window(Box<crate::window::WindowTvf>),
    /// A `CREATE TABLE` with a connector.
    Table(TableSpec),
    /// A `CREATE VIEW`, already planned.
    View(Arc<LogicalPlan>),
    /// A table read by look-ups (`FOR SYSTEM_TIME AS OF`), not as a stream.
    Lookup(Box<crate::lookup::LookupRelation>),
}

/// The `TableSource` DataFusion sees for a runnel table or view; the lowering
/// step downcasts to it to find what a scan reads.
#[derive(Debug, Clone)]
pub struct RelationSource {
    /// The name as declared.
    pub name: String,
    /// What it is.
    pub relation: Relation,
    schema: SchemaRef,
}

impl RelationSource {
    /// A relation called `name` with `schema`.
    pub fn new(name: &str, relation: Relation, schema: SchemaRef) -> Self {
        Self {
            name: name.to_string(),
            relation,
            schema,
        }
    }
}

impl TableSource for RelationSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// Supplies SQL functions the planner does not have built in (`classify`, `detect`), asked
/// by name only when a query calls a function the catalog does not know, so that a script
/// which never calls them never pays for loading them.
pub trait FunctionProvider: Send + Sync + std::fmt::Debug {
    /// The function called `name` (lower case), `Ok(None)` if this provider has none.
    ///
    /// # Errors
    /// The function exists but cannot be made ready (e.g. its model does not load); the
    /// message becomes the planning error.
    fn function(&self, name: &str) -> Result<Option<ProvidedFunction>, String>;
}

/// A function from a [`FunctionProvider`].
#[derive(Debug, Clone)]
pub struct ProvidedFunction {
    /// The function.
    pub udf: Arc<ScalarUDF>,
    /// It blocks for long (image inference): projections calling it run off the async threads.
    pub blocking: bool,
}

/// Everything a query can name.
#[derive(Debug)]
pub struct Catalog {
    providers: Vec<Arc<dyn FunctionProvider>>,
    /// Functions resolved through providers, with whether they block.
    provided: std::sync::Mutex<HashMap<String, ProvidedFunction>>,
    /// The first provider failure, reported instead of DataFusion's "invalid function".
    provider_error: std::sync::Mutex<Option<String>>,
    relations: HashMap<String, Arc<RelationSource>>,
    order: Vec<String>,
    scalars: HashMap<String, Arc<ScalarUDF>>,
    aggregates: HashMap<String, Arc<AggregateUDF>>,
    planners: Vec<Arc<dyn ExprPlanner>>,
    relation_planners: Vec<Arc<dyn RelationPlanner>>,
    options: ConfigOptions,
}

impl Default for Catalog {
    fn default() -> Self {
        Self::new()
    }
}

impl Catalog {
    /// A catalog with DataFusion's built-in functions and no tables.
    pub fn new() -> Self {
        let mut scalars = HashMap::new();
        for f in datafusion_functions::all_default_functions()
            .into_iter()
            .chain(datafusion_functions_nested::all_default_nested_functions())
            .chain(crate::functions::all())
        {
            for alias in f.aliases() {
                scalars.insert(alias.to_ascii_lowercase(), f.clone());
            }
            scalars.insert(f.name().to_ascii_lowercase(), f);
        }
        let mut aggregates = HashMap::new();
        for f in datafusion_functions_aggregate::all_default_aggregate_functions()
            .into_iter()
            .chain(crate::functions::aggregates())
        {
            for alias in f.aliases() {
                aggregates.insert(alias.to_ascii_lowercase(), f.clone());
            }
            aggregates.insert(f.name().to_ascii_lowercase(), f);
        }
        let planners: Vec<Arc<dyn ExprPlanner>> = vec![
            Arc::new(datafusion_functions::core::planner::CoreFunctionPlanner::default()),
            Arc::new(datafusion_functions::unicode::planner::UnicodeFunctionPlanner),
            Arc::new(datafusion_functions::datetime::planner::DatetimeFunctionPlanner),
            Arc::new(datafusion_functions_nested::planner::NestedFunctionPlanner),
            Arc::new(datafusion_functions_nested::planner::FieldAccessPlanner),
            Arc::new(datafusion_functions_aggregate::planner::AggregateFunctionPlanner),
        ];
        let mut options = ConfigOptions::default();
        // Flink identifiers are case-sensitive as written; functions are looked up case-insensitively.
        options.sql_parser.enable_ident_normalization = false;
        let relation_planners: Vec<Arc<dyn RelationPlanner>> = vec![
            Arc::new(crate::window::WindowTvfPlanner),
            Arc::new(crate::unnest::UnnestPlanner),
            Arc::new(crate::lookup::LookupPlanner),
        ];
        Self {
            providers: Vec::new(),
            provided: Default::default(),
            provider_error: Default::default(),
            relations: HashMap::new(),
            order: Vec::new(),
            scalars,
            aggregates,
            planners,
            relation_planners,
            options,
        }
    }

    /// Adds a scalar function (e.g. `classify`), replacing one of the same name.
    pub fn register_udf(&mut self, udf: Arc<ScalarUDF>) {
        for alias in udf.aliases() {
            self.scalars.insert(alias.to_ascii_lowercase(), udf.clone());
        }
        self.scalars.insert(udf.name().to_ascii_lowercase(), udf);
    }

    /// Asks `provider` for functions the catalog does not know.
    pub fn add_provider(&mut self, provider: Arc<dyn FunctionProvider>) {
        self.providers.push(provider);
    }

    /// Names of the provided functions that were resolved and block.
    pub fn blocking_functions(&self) -> Vec<String> {
        let provided = self.provided.lock().unwrap_or_else(|p| p.into_inner());
        provided
            .iter()
            .filter(|(_, f)| f.blocking)
            .map(|(_, f)| f.udf.name().to_string())
            .collect()
    }

    /// A provider's failure while planning the last query, if any (taken).
    pub fn take_provider_error(&self) -> Option<String> {
        self.provider_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn provided_function(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        let mut provided = self.provided.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = provided.get(name) {
            return Some(f.udf.clone());
        }
        for p in &self.providers {
            match p.function(name) {
                Ok(Some(f)) => {
                    let udf = f.udf.clone();
                    provided.insert(name.to_string(), f);
                    return Some(udf);
                }
                Ok(None) => {}
                Err(e) => {
                    let mut err = self
                        .provider_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    err.get_or_insert(e);
                    return None;
                }
            }
        }
        None
    }

    /// Declares a table or view; the name must be new.
    pub fn add(&mut self, name: &str, relation: Relation, schema: SchemaRef) -> Result<(), String> {
        if self.relations.contains_key(name) {
            return Err(format!("'{name}' is already declared"));
        }
        self.order.push(name.to_string());
        self.relations.insert(
            name.to_string(),
            Arc::new(RelationSource {
                name: name.to_string(),
                relation,
                schema,
            }),
        );
        Ok(())
    }

    /// The table or view called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<RelationSource>> {
        self.relations.get(name)
    }

    /// Declared names, in declaration order (for "did you mean" lists).
    pub fn names(&self) -> &[String] {
        &self.order
    }
}

impl ContextProvider for Catalog {
    fn get_table_source(&self, name: TableReference) -> DfResult<Arc<dyn TableSource>> {
        let table = name.table();
        match self.relations.get(table) {
            Some(r) if name.schema().is_none() => Ok(r.clone() as Arc<dyn TableSource>),
            _ => {
                let known = if self.order.is_empty() {
                    "none".to_string()
                } else {
                    self.order.join(", ")
                };
                plan_err!("unknown table '{name}'; declared tables and views: {known}")
            }
        }
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        &self.planners
    }

    fn get_relation_planners(&self) -> &[Arc<dyn RelationPlanner>] {
        &self.relation_planners
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        let lower = name.to_ascii_lowercase();
        self.scalars
            .get(&lower)
            .cloned()
            .or_else(|| self.provided_function(&lower))
    }

    fn get_higher_order_meta(&self, _name: &str) -> Option<Arc<HigherOrderUDF>> {
        None
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.aggregates.get(&name.to_ascii_lowercase()).cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        let name = name.to_ascii_lowercase();
        crate::functions::window_functions()
            .into_iter()
            .find(|f| f.name() == name)
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn get_variable_field(&self, _variable_names: &[String]) -> Option<FieldRef> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        &self.options
    }

    fn udf_names(&self) -> Vec<String> {
        self.scalars.keys().cloned().collect()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.aggregates.keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        crate::functions::window_functions()
            .iter()
            .map(|f| f.name().to_string())
            .collect()
    }
}
