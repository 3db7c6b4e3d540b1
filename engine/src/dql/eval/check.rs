//! Checks a statement once, when it is prepared, for mistakes no row can
//! fix: unknown functions, wrong numbers of arguments (aggregates take
//! exactly one), and literal arguments a function must refuse (a regular
//! expression, a date unit or part). Without it such a mistake would only
//! surface when some row reaches the call, so a query over an empty
//! collection would silently "work".

use super::func::{self, Site};
use super::{is_aggregate, EvalError, Params};
use crate::dql::ast::{Expr, Statement};
use crate::value::Value;

/// Every mistake-free statement passes; the first mistake is returned.
pub fn check(stmt: &Statement) -> Result<(), EvalError> {
    let mut first = None;
    stmt.for_each_expr(&mut |e| {
        if first.is_none() {
            first = check_expr(e).err();
        }
    });
    first.map_or(Ok(()), Err)
}

fn check_expr(e: &Expr) -> Result<(), EvalError> {
    if let Expr::Call { name, args, pos, .. } = e {
        let site = Site { name, pos: *pos };
        if is_aggregate(name) {
            if args.len() != 1 {
                return Err(EvalError::Arity {
                    name: name.clone(),
                    expected: "1".into(),
                    found: args.len(),
                    pos: *pos,
                });
            }
        } else {
            let f = func::lookup(name).ok_or_else(|| EvalError::UnknownFunction {
                name: name.clone(),
                pos: *pos,
            })?;
            f.check_arity(args.len(), &site)?;
            check_literals(f, name, args, &site)?;
        }
    }
    let mut first = Ok(());
    e.for_children(&mut |c| {
        if first.is_ok() {
            first = check_expr(c);
        }
    });
    first
}

/// Runs a function whose "shape" argument (pattern, unit, part) is a
/// literal on sample values for its other arguments: a refusal then can only
/// come from the literal.
fn check_literals(f: &func::Func, name: &str, args: &[Expr], site: &Site<'_>) -> Result<(), EvalError> {
    let date = || Some(Value::from("2026-01-01T00:00:00Z"));
    let (at, samples) = match name {
        "regexp_like" => (1, vec![Some(Value::from("")), None]),
        "date_add" => (2, vec![date(), Some(Value::Int(1)), None]),
        "date_diff" => (2, vec![date(), date(), None]),
        "date_part" => (1, vec![date(), None]),
        _ => return Ok(()),
    };
    let Some(Expr::Literal(shape)) = args.get(at) else {
        return Ok(());
    };
    let mut values = samples;
    values[at] = Some(shape.clone());
    match f.apply(values, site) {
        Err(e @ EvalError::BadArgument { .. }) => Err(e),
        _ => Ok(()),
    }
}

/// Every parameter the statement names is given: checked before it runs,
/// so a missing one is an error even when no row would reach it.
pub fn check_params(stmt: &Statement, params: &Params) -> Result<(), EvalError> {
    fn walk(e: &Expr, params: &Params) -> Result<(), EvalError> {
        if let Expr::Param { name, pos } = e {
            if params.get(name).is_none() {
                return Err(EvalError::MissingParam {
                    name: name.clone(),
                    pos: *pos,
                });
            }
        }
        let mut first = Ok(());
        e.for_children(&mut |c| {
            if first.is_ok() {
                first = walk(c, params);
            }
        });
        first
    }
    let mut first = Ok(());
    stmt.for_each_expr(&mut |e| {
        if first.is_ok() {
            first = walk(e, params);
        }
    });
    first
}
