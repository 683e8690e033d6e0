//! Input validation against a skill's `input_schema` — the same JSON Schema the agent card
//! publishes, so what clients read is what is enforced.
//!
//! Supported keywords (all the skills use): `type` (one or a list), `required`, `properties`,
//! `additionalProperties` (a schema), `minProperties`, `items`, `minItems`, `maxItems`, `enum`,
//! `minimum`, `maximum`, `minLength`, `maxLength`, `pattern` (with an optional
//! `x-pattern-message`), `anyOf`, `oneOf`. Unknown keys of an input object are accepted, as the
//! original accepted them; a `null` optional field counts as absent.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::Regex;
use serde_json::{Map, Value};

/// Checks `input` against `schema` (an object schema); the first problem, phrased for clients:
/// `Missing required parameter: 'f'` or `Invalid parameter 'f': …`.
pub fn validate(schema: &Value, input: &Map<String, Value>) -> Result<(), String> {
    for name in required(schema) {
        if input.get(name).is_none_or(Value::is_null) {
            return Err(format!("Missing required parameter: '{name}'"));
        }
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in properties {
            if let Some(value) = input.get(name).filter(|v| !v.is_null()) {
                check(sub, value, name)
                    .map_err(|(path, problem)| format!("Invalid parameter '{path}': {problem}"))?;
            }
        }
    }
    for keyword in ["anyOf", "oneOf"] {
        if let Some(alternatives) = schema.get(keyword).and_then(Value::as_array) {
            let passing = alternatives
                .iter()
                .filter(|alt| validate(alt, input).is_ok())
                .count();
            let ok = if keyword == "anyOf" {
                passing >= 1
            } else {
                passing == 1
            };
            if !ok {
                return Err(match (keyword, passing, alternatives.first()) {
                    ("oneOf", n, _) if n > 1 => {
                        format!(
                            "Invalid input: give exactly one of {}",
                            alternative_names(alternatives)
                        )
                    }
                    (_, _, Some(first)) if alternatives.len() == 1 => {
                        validate(first, input).err().unwrap_or_default()
                    }
                    _ => format!(
                        "Missing required parameter: one of {}",
                        alternative_names(alternatives)
                    ),
                });
            }
        }
    }
    Ok(())
}

fn required(schema: &Value) -> impl Iterator<Item = &str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// `'a' or 'b'` from alternatives that each require fields.
fn alternative_names(alternatives: &[Value]) -> String {
    alternatives
        .iter()
        .map(|alt| {
            required(alt)
                .map(|r| format!("'{r}'"))
                .collect::<Vec<_>>()
                .join(" with ")
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

/// A failed check: the path of the offending value and the problem.
type Failure = (String, String);

/// Validates one value; on failure returns the path of the offending value and the problem.
/// The keyword groups are checked in this order, the first problem winning.
fn check(schema: &Value, value: &Value, path: &str) -> Result<(), Failure> {
    let fail = |problem: String| (path.to_string(), problem);
    check_type(schema, value).map_err(fail)?;
    check_enum(schema, value).map_err(fail)?;
    if let Some(n) = value.as_f64() {
        check_number(schema, n).map_err(fail)?;
    }
    if let Some(text) = value.as_str() {
        check_string(schema, text).map_err(fail)?;
    }
    if let Some(items) = value.as_array() {
        check_array(schema, items, path)?;
    }
    if let Some(object) = value.as_object() {
        check_object(schema, object, path)?;
    }
    check_combinators(schema, value, path)
}

/// `type`: one type name or a list of them.
fn check_type(schema: &Value, value: &Value) -> Result<(), String> {
    let Some(types) = schema.get("type") else {
        return Ok(());
    };
    let allowed: Vec<&str> = match types {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !allowed.is_empty() && !allowed.iter().any(|t| is_type(value, t)) {
        return Err(format!(
            "expected {}, got {}",
            allowed.join(" or "),
            type_name(value)
        ));
    }
    Ok(())
}

/// `enum`: the value must be one of those listed.
fn check_enum(schema: &Value, value: &Value) -> Result<(), String> {
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let names: Vec<String> = options
            .iter()
            .map(|o| {
                o.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| o.to_string())
            })
            .collect();
        return Err(format!("must be one of: {}", names.join(", ")));
    }
    Ok(())
}

/// `minimum` and `maximum`.
fn check_number(schema: &Value, n: f64) -> Result<(), String> {
    let min = schema.get("minimum").and_then(Value::as_f64);
    let max = schema.get("maximum").and_then(Value::as_f64);
    let out = min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m);
    if !out {
        return Ok(());
    }
    Err(match (min, max) {
        (Some(lo), Some(hi)) => format!("must be between {} and {}", num(lo), num(hi)),
        (Some(lo), None) => format!("must be at least {}", num(lo)),
        (None, Some(hi)) => format!("must be at most {}", num(hi)),
        (None, None) => unreachable!("a bound was violated"),
    })
}

/// `minLength`, `maxLength` (in characters) and `pattern` (with `x-pattern-message`).
fn check_string(schema: &Value, text: &str) -> Result<(), String> {
    let chars = text.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && chars < min
    {
        return Err(if min == 1 {
            "must not be empty".to_string()
        } else {
            format!("must be at least {min} characters long")
        });
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && chars > max
    {
        return Err(format!("must be at most {max} characters long"));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
        && !matches_pattern(pattern, text)
    {
        let message = schema
            .get("x-pattern-message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("does not match {pattern}"));
        return Err(message);
    }
    Ok(())
}

/// `minItems`, `maxItems`, then `items` for each element (`path[i]`).
fn check_array(schema: &Value, items: &[Value], path: &str) -> Result<(), Failure> {
    let fail = |problem: String| Err((path.to_string(), problem));
    let count = items.len() as u64;
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && count < min
    {
        return fail(format!("must have at least {min} item(s)"));
    }
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && count > max
    {
        return fail(format!("must have at most {max} items"));
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, item, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

/// `minProperties`, `required`, then `properties` or `additionalProperties` for each
/// non-null member (`path.key`).
fn check_object(schema: &Value, object: &Map<String, Value>, path: &str) -> Result<(), Failure> {
    let fail = |problem: String| Err((path.to_string(), problem));
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
        && (object.len() as u64) < min
    {
        return fail("must not be empty".to_string());
    }
    for name in required(schema) {
        if object.get(name).is_none_or(Value::is_null) {
            return fail(format!("missing required field '{name}'"));
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    for (key, item) in object {
        if item.is_null() {
            continue;
        }
        let sub = properties
            .and_then(|p| p.get(key))
            .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
        if let Some(sub) = sub {
            check(sub, item, &format!("{path}.{key}"))?;
        }
    }
    Ok(())
}

/// `anyOf` (at least one alternative passes) and `oneOf` (exactly one does).
fn check_combinators(schema: &Value, value: &Value, path: &str) -> Result<(), Failure> {
    for keyword in ["anyOf", "oneOf"] {
        let Some(alternatives) = schema.get(keyword).and_then(Value::as_array) else {
            continue;
        };
        let results: Vec<_> = alternatives
            .iter()
            .map(|alt| check(alt, value, path))
            .collect();
        let passing = results.iter().filter(|r| r.is_ok()).count();
        let ok = if keyword == "anyOf" {
            passing >= 1
        } else {
            passing == 1
        };
        if !ok {
            return Err(furthest(results).unwrap_or_else(|| {
                (
                    path.to_string(),
                    "matches more than one allowed form".to_string(),
                )
            }));
        }
    }
    Ok(())
}

/// The failure of the alternative that got furthest: the one failing deepest in the value,
/// preferring one whose type fitted; the first such on ties.
fn furthest(results: Vec<Result<(), Failure>>) -> Option<Failure> {
    let rank = |(p, m): &Failure| (p.len(), !m.starts_with("expected "));
    let mut best: Option<Failure> = None;
    for error in results.into_iter().filter_map(Result::err) {
        if best.as_ref().is_none_or(|b| rank(&error) > rank(b)) {
            best = Some(error);
        }
    }
    best
}

fn is_type(value: &Value, t: &str) -> bool {
    match t {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "null" => value.is_null(),
        _ => false,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn num(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

/// Patterns come from our own schemas; they are compiled once and cached.
fn matches_pattern(pattern: &str, text: &str) -> bool {
    static CACHE: OnceLock<Mutex<HashMap<String, Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let Ok(mut cache) = cache.lock() else {
        return true;
    };
    if !cache.contains_key(pattern) {
        match Regex::new(pattern) {
            Ok(re) => {
                cache.insert(pattern.to_string(), re);
            }
            // A broken pattern in a schema is our bug; don't reject client input for it.
            Err(_) => return true,
        }
    }
    cache.get(pattern).is_some_and(|re| re.is_match(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "repository": {"type": "string", "minLength": 1, "pattern": "^[^/]+/[^/]+$",
                               "x-pattern-message": "must have the form 'owner/repo'"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                "severity": {"type": "string", "enum": ["info", "warning", "critical"]},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3},
                "info": {"type": "object", "properties": {"consumers": {"type": "array",
                          "items": {"anyOf": [{"type": "string"}, {"type": "object", "required": ["repository"]}]}}},
                          "additionalProperties": {"type": ["string", "array"]}, "minProperties": 1},
            },
            "required": ["repository", "severity"],
        })
    }

    fn problem(v: Value) -> String {
        validate(&schema(), &input(v)).unwrap_err()
    }

    #[test]
    fn required_fields_are_reported_in_schema_order() {
        assert_eq!(
            problem(json!({})),
            "Missing required parameter: 'repository'"
        );
        assert_eq!(
            problem(json!({"repository": "a/b", "severity": null})),
            "Missing required parameter: 'severity'"
        );
    }

    #[test]
    fn types_enums_ranges_and_lengths() {
        let ok = json!({"repository": "a/b", "severity": "info"});
        assert!(validate(&schema(), &input(ok)).is_ok());
        assert_eq!(
            problem(json!({"repository": 5, "severity": "info"})),
            "Invalid parameter 'repository': expected string, got integer"
        );
        assert_eq!(
            problem(json!({"repository": "a/b", "severity": "WRONG"})),
            "Invalid parameter 'severity': must be one of: info, warning, critical"
        );
        assert_eq!(
            problem(json!({"repository": "a/b", "severity": "info", "limit": 0})),
            "Invalid parameter 'limit': must be between 1 and 100"
        );
        assert_eq!(
            problem(json!({"repository": "a/b", "severity": "info", "limit": 2.5})),
            "Invalid parameter 'limit': expected integer, got number"
        );
        assert_eq!(
            problem(json!({"repository": "", "severity": "info"})),
            "Invalid parameter 'repository': must not be empty"
        );
        assert_eq!(
            problem(json!({"repository": "noslash", "severity": "info"})),
            "Invalid parameter 'repository': must have the form 'owner/repo'"
        );
    }

    #[test]
    fn nested_arrays_and_objects_name_the_path() {
        assert_eq!(
            problem(json!({"repository": "a/b", "severity": "info", "tags": ["ok", "toolong"]})),
            "Invalid parameter 'tags[1]': must be at most 5 characters long"
        );
        assert_eq!(
            problem(json!({"repository": "a/b", "severity": "info", "tags": ["a", "b", "c", "d"]})),
            "Invalid parameter 'tags': must have at most 3 items"
        );
        assert_eq!(
            problem(json!({"repository": "a/b", "severity": "info", "info": {}})),
            "Invalid parameter 'info': must not be empty"
        );
        assert_eq!(
            problem(
                json!({"repository": "a/b", "severity": "info", "info": {"consumers": [{"name": "x"}]}})
            ),
            "Invalid parameter 'info.consumers[0]': missing required field 'repository'"
        );
        assert_eq!(
            problem(json!({"repository": "a/b", "severity": "info", "info": {"region": 3}})),
            "Invalid parameter 'info.region': expected string or array, got integer"
        );
        let ok = json!({"repository": "a/b", "severity": "info", "info": {"consumers": ["x/y", {"repository": "z/w"}]}});
        assert!(validate(&schema(), &input(ok)).is_ok());
    }

    #[test]
    fn unknown_fields_and_nulls_are_accepted() {
        let ok =
            json!({"repository": "a/b", "severity": "info", "recorded_by": "bot", "limit": null});
        assert!(validate(&schema(), &input(ok)).is_ok());
    }

    #[test]
    fn exactly_one_of_two_fields() {
        let schema = json!({
            "type": "object",
            "properties": {"pattern_id": {"type": "integer"}, "text": {"type": "string"}},
            "oneOf": [{"required": ["pattern_id"]}, {"required": ["text"]}],
        });
        assert!(validate(&schema, &input(json!({"text": "x"}))).is_ok());
        assert_eq!(
            validate(&schema, &input(json!({}))).unwrap_err(),
            "Missing required parameter: one of 'pattern_id' or 'text'"
        );
        assert_eq!(
            validate(&schema, &input(json!({"text": "x", "pattern_id": 1}))).unwrap_err(),
            "Invalid input: give exactly one of 'pattern_id' or 'text'"
        );
    }
}
