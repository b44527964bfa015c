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

    /// `JOIN dim FOR SYSTEM_TIME AS OF s.proc_time` (lookup joins).
    fn supports_table_versioning(&self) -> bool {
        true
    }

    /// `TABLE t [PARTITION BY k, …]` as an expression (only meaningful as the
    /// first argument of TUMBLE/HOP/SESSION): becomes
    /// `__runnel_table_arg(t, k, …)`, so the error positions of everything
    /// else are kept.
    fn parse_prefix(&self, parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        if let sqlparser::tokenizer::Token::Word(w) = &parser.peek_token().token
            && (w.value.eq_ignore_ascii_case("TIMESTAMPADD")
                || w.value.eq_ignore_ascii_case("TIMESTAMPDIFF"))
            && parser.peek_nth_token(1).token == sqlparser::tokenizer::Token::LParen
        {
            return Some(parse_timestamp_fn(parser));
        }
        if let sqlparser::tokenizer::Token::Word(w) = &parser.peek_token().token
            && (w.value.eq_ignore_ascii_case("CAST") || w.value.eq_ignore_ascii_case("TRY_CAST"))
            && parser.peek_nth_token(1).token == sqlparser::tokenizer::Token::LParen
        {
            return Some(parse_cast(parser));
        }
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

/// `CAST(e AS t)` / `TRY_CAST(e AS t)` where `t` may be Flink's nested `ROW<name t, …>`
/// (or `ROW(name t, …)`) and `ARRAY<t>` to any depth, which sqlparser's type parser
/// does not read for a dialect of its own (`ARRAY<ROW<label STRING>>` stopped at
/// `ROW<`); other types go to sqlparser's.
fn parse_cast(parser: &mut Parser) -> Result<Expr, ParserError> {
    use sqlparser::ast::CastKind;
    let word = parser.next_token().token.to_string();
    let kind = if word.eq_ignore_ascii_case("TRY_CAST") {
        CastKind::TryCast
    } else {
        CastKind::Cast
    };
    parser.expect_token(&sqlparser::tokenizer::Token::LParen)?;
    let expr = parser.parse_expr()?;
    parser.expect_keyword_is(Keyword::AS)?;
    let mut pending = 0;
    let data_type = flink_type(parser, &mut pending)?;
    if pending > 0 {
        return Err(ParserError::ParserError(
            "unbalanced '>' in a CAST's type".to_string(),
        ));
    }
    parser.expect_token(&sqlparser::tokenizer::Token::RParen)?;
    Ok(Expr::Cast {
        kind,
        expr: Box::new(expr),
        data_type,
        array: false,
        format: None,
    })
}

/// A type, with `ARRAY<…>` and `ROW<…>` read here (see [`parse_cast`]); a `>>` closes
/// two levels, the second counted in `pending` for the enclosing type.
fn flink_type(
    parser: &mut Parser,
    pending: &mut u32,
) -> Result<sqlparser::ast::DataType, ParserError> {
    use sqlparser::ast::{ArrayElemTypeDef, DataType, StructBracketKind, StructField};
    use sqlparser::tokenizer::Token;
    let word = match &parser.peek_token().token {
        Token::Word(w) => w.value.to_ascii_uppercase(),
        _ => String::new(),
    };
    let next = parser.peek_nth_token(1).token;
    if word == "ARRAY" && next == Token::Lt {
        parser.next_token();
        parser.next_token();
        let element = flink_type(parser, pending)?;
        close_angle(parser, pending)?;
        return Ok(DataType::Array(ArrayElemTypeDef::AngleBracket(Box::new(
            element,
        ))));
    }
    if word == "ROW" && (next == Token::Lt || next == Token::LParen) {
        parser.next_token();
        parser.next_token();
        let angle = next == Token::Lt;
        let mut fields = Vec::new();
        loop {
            let name = parser.parse_identifier()?;
            let field_type = flink_type(parser, pending)?;
            fields.push(StructField {
                field_name: Some(name),
                field_type,
                options: None,
            });
            if *pending > 0 || !parser.consume_token(&Token::Comma) {
                break;
            }
        }
        if angle {
            close_angle(parser, pending)?;
        } else {
            parser.expect_token(&Token::RParen)?;
        }
        return Ok(DataType::Struct(fields, StructBracketKind::AngleBrackets));
    }
    parser.parse_data_type()
}

/// Consumes one closing `>` of a nested type; `>>` closes two, the second counted in
/// `pending` for the enclosing type. Shared by the DDL's column types and [`flink_type`].
pub(crate) fn close_angle(parser: &mut Parser, pending: &mut u32) -> Result<(), ParserError> {
    use sqlparser::tokenizer::Token;
    if *pending > 0 {
        *pending -= 1;
    } else if parser.consume_token(&Token::ShiftRight) {
        *pending += 1;
    } else {
        parser.expect_token(&Token::Gt)?;
    }
    Ok(())
}

/// Flink's `TIMESTAMPADD(unit, n, ts)` / `TIMESTAMPDIFF(unit, a, b)`: the bare unit word
/// becomes a string argument, so the functions are ordinary scalar functions.
fn parse_timestamp_fn(parser: &mut Parser) -> Result<Expr, ParserError> {
    let name = parser.next_token().token.to_string().to_ascii_lowercase();
    parser.expect_token(&sqlparser::tokenizer::Token::LParen)?;
    const UNITS: [&str; 9] = [
        "MILLISECOND",
        "SECOND",
        "MINUTE",
        "HOUR",
        "DAY",
        "WEEK",
        "MONTH",
        "QUARTER",
        "YEAR",
    ];
    let tok = parser.next_token();
    let unit = match &tok.token {
        sqlparser::tokenizer::Token::Word(w)
            if UNITS.contains(&w.value.to_ascii_uppercase().as_str()) =>
        {
            w.value.to_ascii_uppercase()
        }
        _ => {
            return parser.expected(
                "a time unit (SECOND, MINUTE, HOUR, DAY, WEEK, MONTH, QUARTER, YEAR)",
                tok,
            );
        }
    };
    parser.expect_token(&sqlparser::tokenizer::Token::Comma)?;
    let a = parser.parse_expr()?;
    parser.expect_token(&sqlparser::tokenizer::Token::Comma)?;
    let b = parser.parse_expr()?;
    parser.expect_token(&sqlparser::tokenizer::Token::RParen)?;
    Ok(call(
        &name,
        vec![
            Expr::value(sqlparser::ast::Value::SingleQuotedString(unit)),
            a,
            b,
        ],
    ))
}

/// A plain function call expression.
fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
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
    })
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
    Ok(call(TABLE_ARG_FN, args))
}
