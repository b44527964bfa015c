//! `FlinkDialect`: sqlparser's generic dialect plus Flink's lexical rules
//! (backtick-quoted identifiers) and the `TABLE name [PARTITION BY …]`
//! argument of window table functions.

use sqlparser::ast::{Expr, Function, FunctionArgumentList, FunctionArguments, Ident, ObjectName};
use sqlparser::dialect::Dialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};

/// Name of the marker function that `TABLE t` parses into inside a window
/// table function's arguments; the window planner unpacks it.
pub const TABLE_ARG_FN: &str = "__runnel_table_arg";

/// Flink SQL as runnel reads it.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlinkDialect;

impl Dialect for FlinkDialect {
    fn is_identifier_start(&self, ch: char) -> bool {
        ch.is_alphabetic() || ch == '_'
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_' || ch == '$'
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '`' || ch == '"'
    }

    fn supports_filter_during_aggregation(&self) -> bool {
        true
    }

    /// `TABLE t [PARTITION BY k, …]` as an expression (only meaningful as the
    /// first argument of TUMBLE/HOP/SESSION): becomes
    /// `__runnel_table_arg(t, k, …)`, so the error positions of everything
    /// else are kept.
    fn parse_prefix(&self, parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        let is_table_arg = parser.peek_keyword(Keyword::TABLE)
            && matches!(
                parser.peek_nth_token(1).token,
                sqlparser::tokenizer::Token::Word(_)
            );
        if !is_table_arg {
            return None;
        }
        Some(parse_table_arg(parser))
    }
}

fn parse_table_arg(parser: &mut Parser) -> Result<Expr, ParserError> {
    parser.expect_keyword_is(Keyword::TABLE)?;
    let name = parser.parse_object_name(false)?;
    let mut args = vec![Expr::CompoundIdentifier(
        name.0
            .iter()
            .filter_map(|p| p.as_ident().cloned())
            .collect(),
    )];
    if parser.parse_keywords(&[Keyword::PARTITION, Keyword::BY]) {
        // `PARTITION BY k1, k2, DESCRIPTOR(ts), …`: keys run until DESCRIPTOR.
        loop {
            args.push(parser.parse_expr()?);
            let next_is_key = parser.peek_token().token == sqlparser::tokenizer::Token::Comma
                && !matches!(&parser.peek_nth_token(1).token,
                    sqlparser::tokenizer::Token::Word(w) if w.value.eq_ignore_ascii_case("DESCRIPTOR"));
            if !next_is_key {
                break;
            }
            parser.next_token();
        }
    }
    Ok(Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(TABLE_ARG_FN)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| {
                    sqlparser::ast::FunctionArg::Unnamed(sqlparser::ast::FunctionArgExpr::Expr(e))
                })
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    }))
}
