//! The statements of a runnel script: `CREATE TABLE … WITH (…)` with
//! `WATERMARK FOR`, `CREATE VIEW`, `INSERT INTO … SELECT`, and `SET`.
//!
//! sqlparser's own CREATE TABLE does not read Flink's quoted option keys or
//! `WATERMARK FOR`, so these statements are parsed here with the same
//! [`Parser`] and token stream: positions in errors stay exact.

use arrow::datatypes::DataType;
use runnel_common::{Position, types};
use sqlparser::ast::{BinaryOperator, DateTimeField, Expr, Query, Value};
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token};

use crate::dialect::FlinkDialect;
use crate::error::SqlError;

/// One statement of a script, with the line it starts on.
#[derive(Debug, Clone)]
pub enum Statement {
    /// `CREATE TABLE`.
    CreateTable(TableDef),
    /// `CREATE VIEW name AS query`.
    CreateView {
        /// View name.
        name: String,
        /// The defining query.
        query: Box<Query>,
        /// Line of `CREATE`.
        line: u64,
    },
    /// `INSERT INTO sink [(cols)] query`.
    Insert {
        /// Target table.
        sink: String,
        /// Explicit column list, if given.
        columns: Option<Vec<String>>,
        /// The query.
        query: Box<Query>,
        /// Line of `INSERT`.
        line: u64,
    },
    /// A bare `SELECT …` (or `WITH … SELECT`, `VALUES`): an ad-hoc query whose rows go to
    /// the caller (`runnel query`), not into a declared table.
    Query {
        /// The query.
        query: Box<Query>,
        /// Line of its first word.
        line: u64,
    },
    /// `SET 'key' = 'value'`.
    Set {
        /// Option key.
        key: String,
        /// Option value.
        value: String,
        /// Line of `SET`.
        line: u64,
        /// Where the key was written.
        key_at: Position,
        /// Where the value was written.
        value_at: Position,
    },
}

/// A parsed `CREATE TABLE`.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// Table name.
    pub name: String,
    /// Columns in declaration order.
    pub columns: Vec<ColumnDef>,
    /// `WATERMARK FOR column AS column - INTERVAL …`: (column, delay ms).
    pub watermark: Option<(String, i64)>,
    /// `WITH (…)` options, keys as written (quotes removed), with where each key was written.
    pub options: Vec<(String, String, Position)>,
    /// `PRIMARY KEY (…) NOT ENFORCED` columns.
    pub primary_key: Vec<String>,
    /// `PARTITIONED BY (…)` column names.
    pub partitioned_by: Vec<String>,
    /// Validation rules: `[CONSTRAINT name] CHECK (expr)`, a column's `CHECK (expr)`
    /// and `NOT NULL`, in declaration order.
    pub checks: Vec<CheckDef>,
    /// Line of `CREATE`.
    pub line: u64,
}

/// A validation rule of a table: a row passes when the condition is not false (SQL's
/// CHECK semantics: NULL passes; `NOT NULL` catches those).
#[derive(Debug, Clone)]
pub struct CheckDef {
    /// `CONSTRAINT name`, else `<column>_check` / `<column>_not_null` / `check_<n>`.
    pub name: String,
    /// The condition (for `NOT NULL`: `column IS NOT NULL`).
    pub expr: Expr,
    /// As the rule reads in a message: `CHECK (temperature > -50)`, `sensor NOT NULL`.
    pub text: String,
    /// Where it was written.
    pub at: Position,
}

/// One declared column.
#[derive(Debug, Clone)]
pub struct ColumnDef {
    /// Column name as written.
    pub name: String,
    /// Its Arrow type.
    pub data_type: DataType,
    /// `NOT NULL` was given.
    pub not_null: bool,
    /// `METADATA [FROM 'key'] [VIRTUAL]`: (key, virtual).
    pub metadata: Option<(String, bool)>,
    /// A computed column, `name AS expr` (over the table's other columns): its
    /// expression. Its `data_type` is then `Null` until the planner types it.
    pub computed: Option<Expr>,
}

/// Deepest expression nesting a query may have (`1 + 1 + …` nests one level per term).
/// Planning and evaluation recurse over expressions; past this they could exhaust the
/// stack, so such a query is refused with an error instead.
pub const MAX_EXPRESSION_DEPTH: usize = 500;

/// Refuses a query whose expressions nest deeper than [`MAX_EXPRESSION_DEPTH`].
fn check_depth(query: &Query, line: u64) -> Result<(), SqlError> {
    use sqlparser::ast::{Visit, Visitor};
    use std::ops::ControlFlow;
    struct Depth {
        now: usize,
    }
    impl Visitor for Depth {
        type Break = ();
        fn pre_visit_expr(&mut self, _: &sqlparser::ast::Expr) -> ControlFlow<()> {
            self.now += 1;
            if self.now > MAX_EXPRESSION_DEPTH {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        fn post_visit_expr(&mut self, _: &sqlparser::ast::Expr) -> ControlFlow<()> {
            self.now -= 1;
            ControlFlow::Continue(())
        }
    }
    match query.visit(&mut Depth { now: 0 }) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(SqlError::Statement {
            line,
            message: format!(
                "an expression nests deeper than {MAX_EXPRESSION_DEPTH} levels (e.g. a chain \
                 of that many `+` or `OR` terms); split it up, or use IN (…) for long lists \
                 of alternatives"
            ),
        }),
    }
}

/// Parses a whole script into statements.
pub fn parse_script(sql: &str) -> Result<Vec<Statement>, SqlError> {
    let mut statements = parse_statements(sql)?;
    for s in &mut statements {
        match s {
            Statement::Insert { query, line, .. }
            | Statement::CreateView { query, line, .. }
            | Statement::Query { query, line } => {
                check_depth(query, *line)?;
                unnest_as_relation(query);
            }
            _ => {}
        }
    }
    Ok(statements)
}

/// The Flink dialect reads `UNNEST(arr) AS t (x)` in FROM as a call of a table
/// function named UNNEST; this turns it into the UNNEST relation, which the planner
/// treats as lateral (its argument may name the columns of the tables before it).
fn unnest_as_relation(query: &mut Query) {
    use sqlparser::ast::{FunctionArg, FunctionArgExpr, TableFactor, VisitMut, VisitorMut};
    use std::ops::ControlFlow;
    struct Rewrite;
    impl VisitorMut for Rewrite {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            let TableFactor::Table {
                name,
                alias,
                args: Some(args),
                with_ordinality,
                ..
            } = factor
            else {
                return ControlFlow::Continue(());
            };
            let is_unnest = name.0.len() == 1
                && name.0[0].as_ident().is_some_and(|i| {
                    i.quote_style.is_none() && i.value.eq_ignore_ascii_case("UNNEST")
                });
            if !is_unnest {
                return ControlFlow::Continue(());
            }
            let exprs: Option<Vec<Expr>> = args
                .args
                .iter()
                .map(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                    _ => None,
                })
                .collect();
            if let Some(array_exprs) = exprs {
                *factor = TableFactor::UNNEST {
                    alias: alias.take(),
                    array_exprs,
                    with_offset: false,
                    with_offset_alias: None,
                    with_ordinality: *with_ordinality,
                };
            }
            ControlFlow::Continue(())
        }
    }
    let _ = query.visit(&mut Rewrite);
}

fn parse_statements(sql: &str) -> Result<Vec<Statement>, SqlError> {
    let dialect = FlinkDialect;
    let mut parser = Parser::new(&dialect).try_with_sql(sql)?;
    let mut out = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        let tok = parser.peek_token();
        if tok.token == Token::EOF {
            break;
        }
        let line = tok.span.start.line;
        let stmt = if parser.parse_keyword(Keyword::CREATE) {
            let _ = parser.parse_keyword(Keyword::TEMPORARY);
            if parser.parse_keyword(Keyword::TABLE) {
                Statement::CreateTable(parse_create_table(&mut parser, line)?)
            } else if parser.parse_keyword(Keyword::VIEW) {
                let _ = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
                let name = object_name(&mut parser)?;
                parser.expect_keyword_is(Keyword::AS)?;
                let query = parser.parse_query()?;
                Statement::CreateView { name, query, line }
            } else {
                let found = parser.peek_token();
                return Err(SqlError::at(
                    found.span.start.line,
                    format!("expected TABLE or VIEW after CREATE, found {}", found.token),
                ));
            }
        } else if parser.parse_keyword(Keyword::INSERT) {
            if !parser.parse_keyword(Keyword::INTO) {
                parser.expect_keyword_is(Keyword::OVERWRITE)?;
            }
            let _ = parser.parse_keyword(Keyword::TABLE);
            let sink = object_name(&mut parser)?;
            let columns = if parser.peek_token().token == Token::LParen
                && !matches!(parser.peek_nth_token(1).token, Token::Word(ref w) if w.keyword == Keyword::SELECT || w.keyword == Keyword::WITH)
            {
                parser.expect_token(&Token::LParen)?;
                let cols = parser.parse_comma_separated(|p| p.parse_identifier())?;
                parser.expect_token(&Token::RParen)?;
                Some(cols.into_iter().map(|i| i.value).collect())
            } else {
                None
            };
            let query = parser.parse_query()?;
            Statement::Insert {
                sink,
                columns,
                query,
                line,
            }
        } else if matches!(&tok.token, Token::LParen)
            || matches!(&tok.token, Token::Word(w) if matches!(w.keyword, Keyword::SELECT | Keyword::WITH | Keyword::VALUES))
        {
            Statement::Query {
                query: parser.parse_query()?,
                line,
            }
        } else if parser.parse_keyword(Keyword::SET) {
            let key_at = position(&parser);
            let key = option_word(&mut parser)?;
            parser.expect_token(&Token::Eq)?;
            let value_at = position(&parser);
            let value = option_word(&mut parser)?;
            Statement::Set {
                key,
                value,
                line,
                key_at,
                value_at,
            }
        } else {
            return Err(SqlError::at(
                line,
                format!(
                    "expected CREATE TABLE, CREATE VIEW, INSERT INTO, SELECT or SET, found {} at column {}",
                    tok.token, tok.span.start.column
                ),
            ));
        };
        let next = parser.peek_token();
        if next.token != Token::EOF && next.token != Token::SemiColon {
            return Err(SqlError::Syntax(format!(
                "{}: expected ';' after the statement, found {}",
                loc(next.span.start),
                next.token
            )));
        }
        out.push(stmt);
    }
    Ok(out)
}

fn object_name(parser: &mut Parser) -> Result<String, SqlError> {
    let name = parser.parse_object_name(false)?;
    Ok(name
        .0
        .iter()
        .map(|p| {
            p.as_ident()
                .map(|i| i.value.clone())
                .unwrap_or_else(|| p.to_string())
        })
        .collect::<Vec<_>>()
        .join("."))
}

/// An option key or value: `'quoted'`, an identifier path `a.b-c.d`, or a number.
fn option_word(parser: &mut Parser) -> Result<String, SqlError> {
    let tok = parser.next_token();
    let mut text = match &tok.token {
        Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => return Ok(s.clone()),
        Token::Word(w) => w.value.clone(),
        Token::Number(n, _) => return Ok(n.clone()),
        other => {
            return Err(SqlError::Syntax(format!(
                "{}: expected an option key or value, found {other}",
                loc(tok.span.start)
            )));
        }
    };
    // Unquoted dotted/dashed keys: scan.startup.mode, dead-letter.path.
    loop {
        match parser.peek_token().token {
            Token::Period => text.push('.'),
            Token::Minus => text.push('-'),
            _ => break,
        }
        parser.next_token();
        match parser.next_token().token {
            Token::Word(w) => text.push_str(&w.value),
            Token::Number(n, _) => text.push_str(&n),
            other => {
                let at = parser.get_current_token().span.start;
                return Err(SqlError::Syntax(format!(
                    "{}: unexpected {other} in option name '{text}'",
                    loc(at)
                )));
            }
        }
    }
    Ok(text)
}

/// Where the next token starts.
fn position(parser: &Parser) -> Position {
    let at = parser.peek_token().span.start;
    Position {
        line: at.line,
        column: at.column,
    }
}

fn is_word(parser: &Parser, word: &str) -> bool {
    matches!(&parser.peek_token().token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

fn loc(l: Location) -> String {
    format!("line {}, column {}", l.line, l.column)
}

fn parse_create_table(parser: &mut Parser, line: u64) -> Result<TableDef, SqlError> {
    let _ = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = object_name(parser)?;
    parser.expect_token(&Token::LParen)?;
    let mut columns: Vec<ColumnDef> = Vec::new();
    let mut watermark = None;
    let mut primary_key = Vec::new();
    let mut checks: Vec<CheckDef> = Vec::new();
    loop {
        let start = parser.peek_token();
        if is_word(parser, "WATERMARK") {
            parser.next_token();
            parser.expect_keyword_is(Keyword::FOR)?;
            let col = parser.parse_identifier()?.value;
            parser.expect_keyword_is(Keyword::AS)?;
            let expr = parser.parse_expr()?;
            let delay = watermark_delay(&col, &expr).ok_or_else(|| {
                SqlError::at(
                    start.span.start.line,
                    format!(
                        "WATERMARK FOR {col} AS {expr}: expected `{col}` or `{col} - INTERVAL 'n' SECOND` (also MILLISECOND, MINUTE, HOUR)"
                    ),
                )
            })?;
            if !columns.iter().any(|c| c.name == col) {
                return Err(SqlError::at(
                    start.span.start.line,
                    format!("WATERMARK FOR {col}: table '{name}' has no column '{col}'"),
                ));
            }
            watermark = Some((col, delay));
        } else if is_word(parser, "CONSTRAINT") || is_word(parser, "CHECK") {
            let at = position(parser);
            let named = if parser.parse_keyword(Keyword::CONSTRAINT) {
                Some(parser.parse_identifier()?.value)
            } else {
                None
            };
            if parser.parse_keyword(Keyword::PRIMARY) {
                // `CONSTRAINT pk PRIMARY KEY (…) NOT ENFORCED`.
                primary_key.extend(parse_primary_key(parser, &name, &columns, at)?);
            } else {
                parser.expect_keyword_is(Keyword::CHECK)?;
                let rule = named.unwrap_or_else(|| format!("check_{}", checks.len() + 1));
                let check = parse_check(parser, rule, at)?;
                if checks.iter().any(|c: &CheckDef| c.name == check.name) {
                    return Err(SqlError::located(
                        at,
                        format!("table '{name}' declares the rule '{}' twice", check.name),
                    ));
                }
                checks.push(check);
            }
        } else if parser.parse_keyword(Keyword::PRIMARY) {
            // PRIMARY KEY (…) NOT ENFORCED: not checked (as in Flink); upserting sinks key
            // their writes by it.
            let at = Position {
                line: start.span.start.line,
                column: start.span.start.column,
            };
            primary_key.extend(parse_primary_key(parser, &name, &columns, at)?);
        } else {
            let ident = parser.parse_identifier()?;
            if columns.iter().any(|c| c.name == ident.value) {
                return Err(SqlError::at(
                    start.span.start.line,
                    format!("table '{name}' declares column '{}' twice", ident.value),
                ));
            }
            if parser.parse_keyword(Keyword::AS) {
                // Flink's computed column: `name AS expr [COMMENT '…']`.
                let expr = parser.parse_expr()?;
                if parser.parse_keyword(Keyword::COMMENT) {
                    parser.parse_literal_string()?;
                }
                columns.push(ColumnDef {
                    name: ident.value,
                    data_type: DataType::Null,
                    not_null: false,
                    metadata: None,
                    computed: Some(expr),
                });
            } else {
                let data_type = parse_type(parser)?;
                let mut not_null = false;
                let at = position(parser);
                if parser.parse_keywords(&[Keyword::NOT, Keyword::NULL]) {
                    not_null = true;
                    checks.push(CheckDef {
                        name: format!("{}_not_null", ident.value),
                        expr: Expr::IsNotNull(Box::new(Expr::Identifier(ident.clone()))),
                        text: format!("{} NOT NULL", ident.value),
                        at,
                    });
                } else {
                    let _ = parser.parse_keyword(Keyword::NULL);
                }
                if is_word(parser, "CHECK") {
                    // A column's own rule: `temperature DOUBLE CHECK (temperature < 100)`.
                    let at = position(parser);
                    parser.next_token();
                    checks.push(parse_check(parser, format!("{}_check", ident.value), at)?);
                }
                // Flink's `METADATA [FROM 'key'] [VIRTUAL]`.
                let metadata = if is_word(parser, "METADATA") {
                    parser.next_token();
                    let key = if parser.parse_keyword(Keyword::FROM) {
                        parser.parse_literal_string()?
                    } else {
                        ident.value.clone()
                    };
                    Some((key, parser.parse_keyword(Keyword::VIRTUAL)))
                } else {
                    None
                };
                if parser.parse_keyword(Keyword::COMMENT) {
                    parser.parse_literal_string()?;
                }
                columns.push(ColumnDef {
                    name: ident.value,
                    data_type,
                    not_null,
                    metadata,
                    computed: None,
                });
            }
        }
        if !parser.consume_token(&Token::Comma) {
            break;
        }
    }
    parser.expect_token(&Token::RParen)?;
    // Flink: `PARTITIONED BY (a, b)` between the columns and WITH.
    let mut partitioned_by = Vec::new();
    if parser.parse_keywords(&[Keyword::PARTITIONED, Keyword::BY]) {
        parser.expect_token(&Token::LParen)?;
        loop {
            let ident = parser.parse_identifier()?;
            if !columns.iter().any(|c| c.name == ident.value) {
                return Err(SqlError::at(
                    line,
                    format!(
                        "table '{name}': PARTITIONED BY names '{}', which is not a column",
                        ident.value
                    ),
                ));
            }
            partitioned_by.push(ident.value);
            if !parser.consume_token(&Token::Comma) {
                break;
            }
        }
        parser.expect_token(&Token::RParen)?;
    }
    let mut options = Vec::new();
    if parser.parse_keyword(Keyword::WITH) {
        parser.expect_token(&Token::LParen)?;
        if !parser.consume_token(&Token::RParen) {
            loop {
                let at = position(parser);
                let key = legacy_key(option_word(parser)?);
                parser.expect_token(&Token::Eq)?;
                let value = option_word(parser)?;
                if options.iter().any(|(k, _, _)| *k == key) {
                    return Err(SqlError::located(
                        at,
                        format!("table '{name}': option '{key}' given twice"),
                    ));
                }
                options.push((key, value, at));
                if !parser.consume_token(&Token::Comma) {
                    break;
                }
            }
            parser.expect_token(&Token::RParen)?;
        }
    }
    if columns.is_empty() {
        return Err(SqlError::at(
            line,
            format!("table '{name}' declares no columns"),
        ));
    }
    Ok(TableDef {
        name,
        columns,
        watermark,
        options,
        primary_key,
        partitioned_by,
        checks,
        line,
    })
}

/// `KEY (a, b) [NOT ENFORCED]` after `PRIMARY`: the key's columns, each declared.
fn parse_primary_key(
    parser: &mut Parser,
    table: &str,
    columns: &[ColumnDef],
    at: Position,
) -> Result<Vec<String>, SqlError> {
    parser.expect_keyword_is(Keyword::KEY)?;
    parser.expect_token(&Token::LParen)?;
    let cols = parser.parse_comma_separated(|p| p.parse_identifier())?;
    parser.expect_token(&Token::RParen)?;
    let _ = parser.parse_keywords(&[Keyword::NOT, Keyword::ENFORCED]);
    let mut key = Vec::with_capacity(cols.len());
    for c in cols {
        if !columns.iter().any(|d| d.name == c.value) {
            return Err(SqlError::located(
                at,
                format!("PRIMARY KEY: table '{table}' has no column '{}'", c.value),
            ));
        }
        key.push(c.value);
    }
    Ok(key)
}

/// `(expr)` after `CHECK`.
fn parse_check(parser: &mut Parser, name: String, at: Position) -> Result<CheckDef, SqlError> {
    parser.expect_token(&Token::LParen)?;
    let expr = parser.parse_expr()?;
    parser.expect_token(&Token::RParen)?;
    Ok(CheckDef {
        text: format!("CHECK ({expr})"),
        name,
        expr,
        at,
    })
}

/// Flink's legacy descriptor keys (`connector.type`, `connector.path`, `format.type`,
/// as in Nexmark's q13) under their current names.
fn legacy_key(key: String) -> String {
    match key.to_ascii_lowercase().as_str() {
        "connector.type" => "connector".into(),
        "connector.path" => "path".into(),
        "format.type" => "format".into(),
        _ => key,
    }
}

/// A column type: a type name with optional `(p[, s])`, plus Flink's
/// `TIMESTAMP(3) WITH LOCAL TIME ZONE` and `TIMESTAMP WITHOUT TIME ZONE`,
/// and the nested `ARRAY<t>`, `ROW<name t, …>` (or `ROW(name t, …)`) and
/// `MAP<k, v>`, nested to any depth.
fn parse_type(parser: &mut Parser) -> Result<DataType, SqlError> {
    let mut pending = 0;
    let at = position(parser);
    let dt = parse_type_nested(parser, &mut pending)?;
    if pending > 0 {
        return Err(SqlError::located(at, "unbalanced '>' in a column type"));
    }
    Ok(dt)
}

fn parse_type_nested(parser: &mut Parser, pending: &mut u32) -> Result<DataType, SqlError> {
    let tok = parser.next_token();
    let word = match &tok.token {
        Token::Word(w) => w.value.to_ascii_uppercase(),
        other => {
            return Err(SqlError::Syntax(format!(
                "{}: expected a column type, found {other}",
                loc(tok.span.start)
            )));
        }
    };
    let mut name = word;
    if name == "MAP" && parser.consume_token(&Token::Lt) {
        let key = parse_type_nested(parser, pending)?;
        if *pending > 0 {
            return Err(SqlError::located(
                position(parser),
                "MAP<key, value> needs a value type",
            ));
        }
        parser.expect_token(&Token::Comma)?;
        let value = parse_type_nested(parser, pending)?;
        crate::dialect::close_angle(parser, pending)?;
        return Ok(types::map_type(key, value));
    }
    if name == "ARRAY" && parser.consume_token(&Token::Lt) {
        let element = parse_type_nested(parser, pending)?;
        crate::dialect::close_angle(parser, pending)?;
        return Ok(types::array_type(element));
    }
    if name == "ROW" {
        let angle = if parser.consume_token(&Token::Lt) {
            true
        } else {
            parser.expect_token(&Token::LParen)?;
            false
        };
        let mut fields: Vec<(String, DataType)> = Vec::new();
        loop {
            let at = position(parser);
            let field = parser.parse_identifier()?.value;
            if fields.iter().any(|(f, _)| f.eq_ignore_ascii_case(&field)) {
                return Err(SqlError::located(
                    at,
                    format!("ROW field '{field}' given twice"),
                ));
            }
            let dt = parse_type_nested(parser, pending)?;
            fields.push((field, dt));
            if *pending > 0 || !parser.consume_token(&Token::Comma) {
                break;
            }
        }
        if angle {
            crate::dialect::close_angle(parser, pending)?;
        } else {
            if *pending > 0 {
                return Err(SqlError::located(
                    position(parser),
                    "unbalanced '>' in ROW(…)",
                ));
            }
            parser.expect_token(&Token::RParen)?;
        }
        return Ok(types::row_type(fields));
    }
    if name == "DOUBLE" {
        let _ = parser.parse_keyword(Keyword::PRECISION);
    }
    if name == "CHARACTER" && parser.parse_keyword(Keyword::VARYING) {
        name = "VARCHAR".into();
    }
    let mut params = Vec::new();
    if parser.consume_token(&Token::LParen) {
        params = parser.parse_comma_separated(|p| p.parse_literal_uint())?;
        parser.expect_token(&Token::RParen)?;
    }
    if name == "TIMESTAMP" {
        if parser.parse_keywords(&[Keyword::WITH, Keyword::LOCAL, Keyword::TIME, Keyword::ZONE]) {
            name = "TIMESTAMP_LTZ".into();
        } else {
            let _ = parser.parse_keywords(&[Keyword::WITHOUT, Keyword::TIME, Keyword::ZONE]);
        }
    }
    if name.starts_with("TIMESTAMP") && params.first().is_some_and(|p| *p > 3) {
        // Arrow millisecond precision is what runnel keeps; finer input is truncated.
        params.clear();
    }
    types::arrow_type(&name, &params).ok_or_else(|| {
        SqlError::at(
            tok.span.start.line,
            format!(
                "unknown or unsupported type {name}{} at column {}; supported: {}",
                if params.is_empty() {
                    String::new()
                } else {
                    format!(
                        "({})",
                        params
                            .iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
                tok.span.start.column,
                types::SUPPORTED
            ),
        )
    })
}

/// Delay in ms of `col` or `col - INTERVAL …`.
fn watermark_delay(col: &str, expr: &Expr) -> Option<i64> {
    match expr {
        Expr::Identifier(i) if i.value == col => Some(0),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Minus,
            right,
        } => match left.as_ref() {
            Expr::Identifier(i) if i.value == col => interval_ms(right),
            _ => None,
        },
        Expr::Nested(inner) => watermark_delay(col, inner),
        _ => None,
    }
}

/// Milliseconds of an `INTERVAL 'n' UNIT` literal (fractions allowed: `'0.5' SECOND`).
pub fn interval_ms(expr: &Expr) -> Option<i64> {
    let Expr::Interval(iv) = expr else {
        return None;
    };
    let text = match iv.value.as_ref() {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.to_string(),
            _ => return None,
        },
        _ => return None,
    };
    let factor: f64 = match &iv.leading_field {
        None => return runnel_common::time::parse_duration_ms(&text),
        Some(f) => match f {
            DateTimeField::Millisecond | DateTimeField::Milliseconds => 1.0,
            DateTimeField::Second | DateTimeField::Seconds => 1_000.0,
            DateTimeField::Minute | DateTimeField::Minutes => 60_000.0,
            DateTimeField::Hour | DateTimeField::Hours => 3_600_000.0,
            DateTimeField::Day | DateTimeField::Days => 86_400_000.0,
            _ => return None,
        },
    };
    let n: f64 = text.trim().parse().ok()?;
    let ms = n * factor;
    (ms.is_finite() && ms >= 0.0).then_some(ms.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Statement {
        let mut v = parse_script(sql).expect("parses");
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    #[test]
    fn create_table_with_watermark_and_quoted_options() {
        let Statement::CreateTable(t) = one(
            "CREATE TABLE bids (auction BIGINT, price DECIMAL(10, 2), ts TIMESTAMP(3),
               WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
             WITH ('connector' = 'file', path = '/tmp/x', 'dead-letter.path' = 'd', scan.startup.mode = 'earliest');",
        ) else {
            panic!("not a table")
        };
        assert_eq!(t.name, "bids");
        assert_eq!(t.columns.len(), 3);
        assert_eq!(t.columns[1].data_type, DataType::Decimal128(10, 2));
        assert_eq!(t.watermark, Some(("ts".into(), 5000)));
        let keys: Vec<_> = t.options.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["connector", "path", "dead-letter.path", "scan.startup.mode"]
        );
    }

    #[test]
    fn rules_table_level_column_level_and_not_null() {
        let Statement::CreateTable(t) = one(
            "CREATE TABLE r (id STRING NOT NULL, t DOUBLE CHECK (t < 100), h DOUBLE,
               CONSTRAINT temp_range CHECK (t BETWEEN -50 AND 60), CHECK (h >= 0),
               CONSTRAINT pk PRIMARY KEY (id) NOT ENFORCED)
             WITH ('connector' = 'file');",
        ) else {
            panic!("not a table")
        };
        let rules: Vec<(&str, &str)> = t
            .checks
            .iter()
            .map(|c| (c.name.as_str(), c.text.as_str()))
            .collect();
        assert_eq!(
            rules,
            [
                ("id_not_null", "id NOT NULL"),
                ("t_check", "CHECK (t < 100)"),
                ("temp_range", "CHECK (t BETWEEN -50 AND 60)"),
                ("check_4", "CHECK (h >= 0)"),
            ]
        );
        assert_eq!(t.primary_key, ["id"]);
        assert_eq!(t.checks[2].at.line, 2);
        let dup = parse_script(
            "CREATE TABLE r (a INT, CONSTRAINT c CHECK (a > 0), CONSTRAINT c CHECK (a < 9)) WITH ('connector' = 'file');",
        );
        assert!(
            dup.unwrap_err()
                .to_string()
                .contains("declares the rule 'c' twice"),
        );
    }

    #[test]
    fn watermark_units() {
        for (unit, ms) in [
            ("MILLISECOND", 250),
            ("SECOND", 250_000),
            ("MINUTE", 15_000_000),
        ] {
            let sql = format!(
                "CREATE TABLE t (ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '250' {unit}) WITH (connector='file')"
            );
            let Statement::CreateTable(t) = one(&sql) else {
                panic!()
            };
            assert_eq!(t.watermark, Some(("ts".into(), ms)));
        }
    }

    #[test]
    fn map_types_parse_and_print_as_flink_writes_them() {
        let Statement::CreateTable(t) = one(
            "CREATE TABLE t (h MAP<STRING, BYTES> METADATA FROM 'headers', m MAP<STRING, INT>)
             WITH (connector = 'file')",
        ) else {
            panic!()
        };
        let names: Vec<String> = t
            .columns
            .iter()
            .map(|c| types::sql_name(&c.data_type))
            .collect();
        assert_eq!(names, ["MAP<STRING, BYTES>", "MAP<STRING, INT>"]);
    }

    #[test]
    fn nested_types_parse_to_any_depth_and_print_as_flink_writes_them() {
        let Statement::CreateTable(t) = one("CREATE TABLE t (
               tags ARRAY<STRING>,
               boxes ARRAY<ROW<label STRING, score DOUBLE>>,
               p ROW(`x` INT, y ARRAY<ARRAY<BIGINT>>),
               m MAP<STRING, MAP<STRING, INT>>,
               after INT)
             WITH (connector = 'file')")
        else {
            panic!()
        };
        let names: Vec<String> = t
            .columns
            .iter()
            .map(|c| types::sql_name(&c.data_type))
            .collect();
        assert_eq!(
            names,
            [
                "ARRAY<STRING>",
                "ARRAY<ROW<label STRING, score DOUBLE>>",
                "ROW<x INT, y ARRAY<ARRAY<BIGINT>>>",
                "MAP<STRING, MAP<STRING, INT>>",
                "INT"
            ]
        );
        for bad in [
            "CREATE TABLE t (a ARRAY<INT) WITH (connector = 'file')",
            "CREATE TABLE t (a ARRAY<ARRAY<INT>>>) WITH (connector = 'file')",
            "CREATE TABLE t (r ROW<a INT, a INT>) WITH (connector = 'file')",
        ] {
            assert!(parse_script(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn all_types_map() {
        let Statement::CreateTable(t) = one(
            "CREATE TABLE t (a BOOLEAN, b INT, c BIGINT, d FLOAT, e DOUBLE, f DECIMAL(5,1), g VARCHAR, h STRING,
             i BYTES, j VARBINARY, k TIMESTAMP(3), l TIMESTAMP_LTZ(3)) WITH (connector = 'file')",
        ) else {
            panic!()
        };
        let names: Vec<String> = t
            .columns
            .iter()
            .map(|c| types::sql_name(&c.data_type))
            .collect();
        assert_eq!(
            names,
            [
                "BOOLEAN",
                "INT",
                "BIGINT",
                "FLOAT",
                "DOUBLE",
                "DECIMAL(5, 1)",
                "STRING",
                "STRING",
                "BYTES",
                "BYTES",
                "TIMESTAMP(3)",
                "TIMESTAMP_LTZ(3)"
            ]
        );
    }

    #[test]
    fn set_insert_view() {
        let v = parse_script(
            "SET 'pipeline.name' = 'x';\nSET parallelism = 4;\nCREATE VIEW v AS SELECT 1;\nINSERT INTO out SELECT * FROM v;",
        )
        .expect("parses");
        assert!(
            matches!(&v[0], Statement::Set { key, value, .. } if key == "pipeline.name" && value == "x")
        );
        assert!(
            matches!(&v[1], Statement::Set { key, value, .. } if key == "parallelism" && value == "4")
        );
        assert!(matches!(&v[2], Statement::CreateView { name, line: 3, .. } if name == "v"));
        assert!(matches!(&v[3], Statement::Insert { sink, line: 4, .. } if sink == "out"));
    }

    #[test]
    fn errors_name_line_and_token() {
        let err = parse_script("CREATE TABLE t (a INT)\nWITH (connector = 'file');\nSELEC 1")
            .unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        assert!(err.to_string().contains("SELEC"), "{err}");
        let err =
            parse_script("CREATE TABLE t (a INTEGRAL) WITH (connector = 'file')").unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown or unsupported type INTEGRAL"),
            "{err}"
        );
        let err =
            parse_script("CREATE TABLE t (a INT, WATERMARK FOR b AS b) WITH (connector = 'file')")
                .unwrap_err();
        assert!(err.to_string().contains("no column 'b'"), "{err}");
    }
}
