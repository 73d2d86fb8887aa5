//! A small JSON Schema checker for the subset Cedar's AI tasks use (the subset OpenAI's strict
//! structured outputs accept): `type`, `properties`, `required`, `additionalProperties: false`,
//! `enum`, `items`, `minItems`/`maxItems`, `minLength`/`maxLength`, `minimum`/`maximum`.

use serde_json::Value;

/// Checks `value` against `schema`; the error names the first offending path.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    check(schema, value, "$")
}

fn check(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    if let Some(types) = schema.get("type") {
        let allowed: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !allowed.is_empty() && !allowed.iter().any(|t| has_type(value, t)) {
            return Err(format!("{path}: expected {}, got {}", allowed.join(" or "), type_name(value)));
        }
    }
    if let Some(Value::Array(options)) = schema.get("enum")
        && !options.contains(value)
    {
        return Err(format!("{path}: {value} is not one of {}", Value::Array(options.clone())));
    }
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                if let Some(name) = required.as_str()
                    && !map.contains_key(name)
                {
                    return Err(format!("{path}: missing required field {name:?}"));
                }
            }
            for (name, field) in map {
                match properties.and_then(|p| p.get(name)) {
                    Some(sub) => check(sub, field, &format!("{path}.{name}"))?,
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        return Err(format!("{path}: unexpected field {name:?}"));
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            let count = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && count < min
            {
                return Err(format!("{path}: needs at least {min} items, has {count}"));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && count > max
            {
                return Err(format!("{path}: allows at most {max} items, has {count}"));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"))?;
                }
            }
        }
        Value::String(text) => {
            let length = text.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && length < min
            {
                return Err(format!("{path}: needs at least {min} characters"));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && length > max
            {
                return Err(format!("{path}: allows at most {max} characters, has {length}"));
            }
        }
        Value::Number(number) => {
            let n = number.as_f64().unwrap_or(f64::NAN);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                return Err(format!("{path}: {n} is below the minimum {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                return Err(format!("{path}: {n} is above the maximum {max}"));
            }
        }
        _ => {}
    }
    Ok(())
}

fn has_type(value: &Value, wanted: &str) -> bool {
    match wanted {
        "integer" => value.as_i64().is_some() || value.as_u64().is_some(),
        "number" => value.is_number(),
        other => type_name(value) == other,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::validate;
    use serde_json::json;

    fn schema() -> serde_json::Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["goals", "minutes", "tone"],
            "properties": {
                "goals": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"type": "string", "maxLength": 10}},
                "minutes": {"type": "integer", "minimum": 5, "maximum": 120},
                "tone": {"type": ["string", "null"], "enum": ["warm", "brief", null]}
            }
        })
    }

    #[test]
    fn accepts_a_conforming_value() {
        assert_eq!(validate(&schema(), &json!({"goals": ["scales"], "minutes": 20, "tone": null})), Ok(()));
    }

    #[test]
    fn names_the_offending_path() {
        let cases = [
            (json!({"goals": [], "minutes": 20, "tone": "warm"}), "$.goals: needs at least 1"),
            (json!({"goals": ["a"], "minutes": 2, "tone": "warm"}), "$.minutes: 2 is below"),
            (json!({"goals": ["a"], "minutes": 2.5, "tone": "warm"}), "$.minutes: expected integer"),
            (json!({"goals": ["a"], "minutes": 20}), "missing required field \"tone\""),
            (json!({"goals": ["a"], "minutes": 20, "tone": "loud"}), "$.tone: \"loud\" is not one of"),
            (json!({"goals": ["a"], "minutes": 20, "tone": null, "x": 1}), "unexpected field \"x\""),
            (json!({"goals": ["much too long"], "minutes": 20, "tone": null}), "$.goals[0]: allows at most 10"),
            (json!([1]), "$: expected object"),
        ];
        for (value, expected) in cases {
            let error = validate(&schema(), &value).unwrap_err();
            assert!(error.contains(expected), "{value}: {error}");
        }
    }
}
