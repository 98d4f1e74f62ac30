//! The targeting query of a campaign sent to a list (the post office design's
//! "targeting query"): which members get it, as a condition over their merge
//! fields, written in JSON:
//!
//! ```text
//! {"country": "DE"}                         equality
//! {"country": {"in": ["DE", "AT"]}}         one of ("not_in": none of)
//! {"age": {"gte": 18, "lt": 65}}            comparisons: eq, ne, lt, lte, gt, gte
//! {"plan": "pro", "country": "DE"}          every key of an object: and
//! {"or": [{...}, {...}]}, {"and": [...]}, {"not": {...}}
//! ```
//!
//! `email` names the member's address. Values compare as numbers when both
//! sides are numbers (or numeric text), else as text; a member without the
//! field matches only `ne` and `not_in`. A pure module: parsed once, tested by
//! tables.

use serde_json::{Map, Value};

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
}

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every member.
    All,
    /// `field OP value`.
    Cmp(String, Op, Value),
    /// `field` is one of the values (or, negated, none of them).
    In(String, Vec<Value>, bool),
    /// All of them.
    And(Vec<Filter>),
    /// Any of them.
    Or(Vec<Filter>),
    /// Not it.
    Not(Box<Filter>),
}

/// Most nested levels and terms a query may have.
const MAX_DEPTH: usize = 16;
const MAX_TERMS: usize = 1000;

fn scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// Parses a query; the error names where (`where.or[1].age`) and what to
/// change.
pub fn parse(query: &Value) -> Result<Filter, String> {
    let mut terms = 0;
    parse_at(query, "where", 0, &mut terms)
}

fn parse_at(v: &Value, at: &str, depth: usize, terms: &mut usize) -> Result<Filter, String> {
    if depth > MAX_DEPTH {
        return Err(format!("{at}: nested deeper than {MAX_DEPTH} levels"));
    }
    let Value::Object(map) = v else {
        return Err(format!(
            "{at}: a condition is an object, like {{\"country\": \"DE\"}} or {{\"or\": [...]}}"
        ));
    };
    let mut all = Vec::new();
    for (key, value) in map {
        *terms += 1;
        if *terms > MAX_TERMS {
            return Err(format!("where: more than {MAX_TERMS} terms"));
        }
        let here = format!("{at}.{key}");
        match key.as_str() {
            "and" | "or" => {
                let Value::Array(items) = value else {
                    return Err(format!("{here}: a list of conditions"));
                };
                let parts = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| parse_at(item, &format!("{here}[{i}]"), depth + 1, terms))
                    .collect::<Result<Vec<_>, _>>()?;
                all.push(if key == "and" {
                    Filter::And(parts)
                } else {
                    Filter::Or(parts)
                });
            }
            "not" => all.push(Filter::Not(Box::new(parse_at(
                value,
                &here,
                depth + 1,
                terms,
            )?))),
            field => all.extend(field_terms(field, value, &here)?),
        }
    }
    Ok(match all.len() {
        0 => Filter::All,
        1 => all.remove(0),
        _ => Filter::And(all),
    })
}

fn field_terms(field: &str, value: &Value, at: &str) -> Result<Vec<Filter>, String> {
    if scalar(value) {
        return Ok(vec![Filter::Cmp(field.to_owned(), Op::Eq, value.clone())]);
    }
    let Value::Object(ops) = value else {
        return Err(format!(
            "{at}: a value (text, number or true/false) or operators like {{\"in\": [...]}}, {{\"gte\": 18}}"
        ));
    };
    if ops.is_empty() {
        return Err(format!("{at}: no operator"));
    }
    let mut out = Vec::new();
    for (op, operand) in ops {
        let here = format!("{at}.{op}");
        let op = match op.as_str() {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "in" | "not_in" => {
                let Value::Array(items) = operand else {
                    return Err(format!("{here}: a list of values"));
                };
                if !items.iter().all(scalar) {
                    return Err(format!("{here}: values are text, numbers or true/false"));
                }
                out.push(Filter::In(field.to_owned(), items.clone(), op == "not_in"));
                continue;
            }
            other => {
                return Err(format!(
                    "{at}: unknown operator {other:?}: use eq, ne, lt, lte, gt, gte, in or not_in"
                ))
            }
        };
        if !scalar(operand) {
            return Err(format!("{here}: a value (text, number or true/false)"));
        }
        out.push(Filter::Cmp(field.to_owned(), op, operand.clone()));
    }
    Ok(out)
}

/// A value as text (what a CSV cell would hold).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
        _ => text(a).cmp(&text(b)),
    }
}

/// Whether member `email` with `fields` matches `f`.
pub fn matches(f: &Filter, email: &str, fields: &Map<String, Value>) -> bool {
    let get = |name: &str| -> Option<Value> {
        if name == "email" {
            Some(Value::String(email.to_owned()))
        } else {
            fields.get(name).filter(|v| !v.is_null()).cloned()
        }
    };
    match f {
        Filter::All => true,
        Filter::And(parts) => parts.iter().all(|p| matches(p, email, fields)),
        Filter::Or(parts) => parts.iter().any(|p| matches(p, email, fields)),
        Filter::Not(inner) => !matches(inner, email, fields),
        Filter::In(name, items, negated) => {
            let found = get(name).is_some_and(|v| items.iter().any(|i| compare(&v, i).is_eq()));
            found != *negated
        }
        Filter::Cmp(name, op, operand) => {
            let Some(v) = get(name) else {
                return *op == Op::Ne;
            };
            let order = compare(&v, operand);
            match op {
                Op::Eq => order.is_eq(),
                Op::Ne => !order.is_eq(),
                Op::Lt => order.is_lt(),
                Op::Lte => order.is_le(),
                Op::Gt => order.is_gt(),
                Op::Gte => order.is_ge(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn member(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn queries_select_members() {
        let ann = member(json!({"country": "DE", "age": "34", "plan": "pro"}));
        let bob = member(json!({"country": "AT", "age": 17}));
        let cy = member(json!({"country": "FR", "age": 70, "plan": "free"}));
        let table = [
            (json!({}), [true, true, true]),
            (json!({"country": "DE"}), [true, false, false]),
            (
                json!({"country": {"in": ["DE", "AT"]}}),
                [true, true, false],
            ),
            (
                json!({"country": {"not_in": ["DE", "AT"]}}),
                [false, false, true],
            ),
            (json!({"age": {"gte": 18, "lt": 65}}), [true, false, false]),
            (json!({"age": {"gt": 9}}), [true, true, true]),
            (json!({"plan": {"ne": "free"}}), [true, true, false]),
            (
                json!({"plan": "pro", "country": "DE"}),
                [true, false, false],
            ),
            (
                json!({"or": [{"country": "FR"}, {"age": {"lt": 18}}]}),
                [false, true, true],
            ),
            (json!({"not": {"country": "DE"}}), [false, true, true]),
            (
                json!({"and": [{"plan": {"in": ["pro", "free"]}}, {"age": {"lte": 34}}]}),
                [true, false, false],
            ),
            (
                json!({"email": {"in": ["ann@x.test"]}}),
                [true, false, false],
            ),
        ];
        let members = [
            ("ann@x.test", &ann),
            ("bob@x.test", &bob),
            ("cy@x.test", &cy),
        ];
        for (query, want) in table {
            let f = parse(&query).unwrap();
            let got: Vec<bool> = members.iter().map(|(e, m)| matches(&f, e, m)).collect();
            assert_eq!(got, want, "{query}");
        }
    }

    #[test]
    fn bad_queries_say_where() {
        let table = [
            (json!([1]), "where: a condition is an object"),
            (
                json!({"age": {"between": [1, 2]}}),
                "where.age: unknown operator \"between\"",
            ),
            (json!({"or": {"a": 1}}), "where.or: a list of conditions"),
            (json!({"or": [{"a": [1]}]}), "where.or[0].a: a value"),
            (json!({"a": {"in": 3}}), "where.a.in: a list of values"),
            (json!({"a": {"gte": [1]}}), "where.a.gte: a value"),
            (json!({"a": {}}), "where.a: no operator"),
        ];
        for (query, want) in table {
            let err = parse(&query).unwrap_err();
            assert!(err.starts_with(want), "{query}: {err}");
        }
        let mut deep = json!({"a": 1});
        for _ in 0..20 {
            deep = json!({"not": deep});
        }
        assert!(parse(&deep).unwrap_err().contains("deeper"));
    }
}
