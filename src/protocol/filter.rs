//! Client filters (PROTOCOL.md §4) and the scalar comparison they use.

use serde_json::{Map, Number, Value};

use super::names::{MAX_FILTER_KEYS, MAX_FILTER_VALUES};

/// Client filter (PROTOCOL.md §4): for every key, the top-level data field of that name must equal one
/// of the listed values; strings compare exactly, numbers by value (7 == 7.0; "7" != 7).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    rules: Vec<(String, Vec<Value>)>,
}

impl Filter {
    /// From the JSON object; each value must be an array of strings/numbers/bools (a single scalar is accepted as a one-element list). Err(message) otherwise.
    pub fn from_value(v: &Value) -> Result<Filter, String> {
        filter_at(v, "filter")
    }

    /// True when every key's data field equals one of its listed values.
    pub fn matches(&self, data: &Map<String, Value>) -> bool {
        self.rules.iter().all(|(key, allowed)| {
            data.get(key)
                .is_some_and(|field| allowed.iter().any(|v| scalar_eq(field, v)))
        })
    }

    /// True when the filter has no keys (it matches everything).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Parses a filter object, naming `path` in error messages.
fn filter_at(v: &Value, path: &str) -> Result<Filter, String> {
    let Value::Object(m) = v else {
        return Err(format!(
            "{path}: must be an object mapping data fields to lists of values"
        ));
    };
    if m.len() > MAX_FILTER_KEYS {
        return Err(format!("{path}: at most {MAX_FILTER_KEYS} fields"));
    }
    let mut rules = Vec::with_capacity(m.len());
    for (key, val) in m {
        let values = match val {
            Value::Array(list) => {
                if list.is_empty() {
                    return Err(format!("{path}.{key}: must not be empty"));
                }
                if list.len() > MAX_FILTER_VALUES {
                    return Err(format!("{path}.{key}: at most {MAX_FILTER_VALUES} values"));
                }
                if !list.iter().all(is_scalar) {
                    return Err(format!(
                        "{path}.{key}: values must be strings, numbers or booleans"
                    ));
                }
                list.clone()
            }
            scalar if is_scalar(scalar) => vec![scalar.clone()],
            _ => {
                return Err(format!(
                    "{path}.{key}: must be a string, number, boolean or a list of them"
                ))
            }
        };
        rules.push((key.clone(), values));
    }
    Ok(Filter { rules })
}

/// Parses an optional filter; absent, `null` and `{}` all mean "no filter".
pub(super) fn opt_filter_at(v: Option<&Value>, path: &str) -> Result<Option<Filter>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => filter_at(v, path).map(|f| (!f.is_empty()).then_some(f)),
    }
}

/// Strings, numbers and booleans may appear in filters.
fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// Filter equality: same JSON type, numbers compared by value.
fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => number_eq(x, y),
        _ => false,
    }
}

/// An integer-valued JSON number, widened so i64 and u64 compare exactly.
pub(super) fn as_int(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// Exact numeric equality across integer and float representations (7 == 7.0).
fn number_eq(a: &Number, b: &Number) -> bool {
    match (as_int(a), as_int(b)) {
        (Some(x), Some(y)) => x == y,
        (Some(i), None) => float_eq_int(b.as_f64(), i),
        (None, Some(i)) => float_eq_int(a.as_f64(), i),
        (None, None) => a.as_f64() == b.as_f64(),
    }
}

/// True when the float is integral and equal to `i` (no precision loss on large integers).
fn float_eq_int(f: Option<f64>, i: i128) -> bool {
    match f {
        // `as` saturates; integral floats within ±1e38 convert exactly.
        Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e38 => f as i128 == i,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tests::obj;
    use serde_json::json;

    #[test]
    fn filters() {
        let f = Filter::from_value(&json!({"sportsbook":["fanduel","draftkings"]})).unwrap();
        assert!(f.matches(&obj(json!({"sportsbook":"fanduel","x":1}))));
        assert!(f.matches(&obj(json!({"sportsbook":"draftkings"}))));
        assert!(!f.matches(&obj(json!({"sportsbook":"FanDuel"}))));
        assert!(
            !f.matches(&obj(json!({"other":"fanduel"}))),
            "missing field never matches"
        );
        assert!(!f.matches(&obj(json!({"sportsbook":null}))));
        assert!(!f.matches(&obj(json!({"sportsbook":["fanduel"]}))));

        let n = Filter::from_value(&json!({"game_id":[7]})).unwrap();
        assert!(n.matches(&obj(json!({"game_id":7}))));
        assert!(n.matches(&obj(json!({"game_id":7.0}))));
        assert!(!n.matches(&obj(json!({"game_id":"7"}))), "\"7\" != 7");
        assert!(!n.matches(&obj(json!({"game_id":7.5}))));
        let s = Filter::from_value(&json!({"game_id":"7"})).unwrap();
        assert!(
            s.matches(&obj(json!({"game_id":"7"}))),
            "a scalar is a one-element list"
        );
        assert!(!s.matches(&obj(json!({"game_id":7}))));
        let fl = Filter::from_value(&json!({"line":[7.0, -3.5]})).unwrap();
        assert!(fl.matches(&obj(json!({"line":7}))));
        assert!(fl.matches(&obj(json!({"line":-3.5}))));
        let big = Filter::from_value(&json!({"id":[u64::MAX]})).unwrap();
        assert!(big.matches(&obj(json!({"id":u64::MAX}))));
        assert!(!big.matches(&obj(json!({"id":-1}))));
        // 2^53 + 1 is not equal to the float 2^53.
        let p = Filter::from_value(&json!({"id":[9_007_199_254_740_993_u64]})).unwrap();
        assert!(!p.matches(&obj(json!({"id":9_007_199_254_740_992.0_f64}))));
        let b = Filter::from_value(&json!({"live":true})).unwrap();
        assert!(b.matches(&obj(json!({"live":true}))));
        assert!(!b.matches(&obj(json!({"live":1}))));

        let multi =
            Filter::from_value(&json!({"sportsbook":["fanduel"],"game_id":["7","8"]})).unwrap();
        assert!(multi.matches(&obj(json!({"sportsbook":"fanduel","game_id":"8"}))));
        assert!(!multi.matches(&obj(json!({"sportsbook":"fanduel","game_id":"9"}))));
        assert!(!multi.matches(&obj(json!({"sportsbook":"bet365","game_id":"7"}))));
        assert!(!multi.matches(&obj(json!({"game_id":"7"}))));

        let empty = Filter::from_value(&json!({})).unwrap();
        assert!(empty.is_empty() && empty.matches(&Map::new()));
    }

    #[test]
    fn filter_refusals() {
        let too_many_keys: Map<String, Value> = (0..=MAX_FILTER_KEYS)
            .map(|i| (format!("k{i}"), json!(1)))
            .collect();
        let too_many_values = json!({"k": vec![1; MAX_FILTER_VALUES + 1]});
        for (v, want) in [
            (json!([1]), "filter: must be an object"),
            (json!("x"), "filter: must be an object"),
            (json!({"a":[]}), "filter.a: must not be empty"),
            (json!({"a":[null]}), "filter.a: values must be"),
            (json!({"a":[[1]]}), "filter.a: values must be"),
            (json!({"a":{"b":1}}), "filter.a: must be a string"),
            (json!({"a":null}), "filter.a: must be a string"),
            (Value::Object(too_many_keys), "filter: at most"),
            (too_many_values, "filter.k: at most"),
        ] {
            let e = Filter::from_value(&v).unwrap_err();
            assert!(e.starts_with(want), "{v}: {e}");
        }
    }
}
