//! A task's metadata: a flat map of string keys to string values that a
//! submit may carry (`"metadata": {"customer": "42"}`, or `?meta.KEY=VALUE`
//! on `POST /v1/{op}`), returned on the task's rows and matched by list and
//! bulk filters.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::FieldError;

/// Metadata: at most [`MAX_KEYS`] keys of `[a-z0-9_.-]`, 1 to
/// [`MAX_KEY_BYTES`] bytes, to string values of at most
/// [`MAX_VALUE_BYTES`] bytes ([`check`]).
pub type Metadata = BTreeMap<String, String>;

/// The most keys a task's metadata holds.
pub const MAX_KEYS: usize = 32;
/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 64;
/// The longest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 256;

/// The query-string prefix of a metadata field (`?meta.customer=42`).
pub const QUERY_PREFIX: &str = "meta.";

/// What is wrong with one key, if anything (the message of its refusal).
pub fn key_problem(key: &str) -> Option<String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Some(format!("a metadata key must be 1 to {MAX_KEY_BYTES} bytes"));
    }
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-');
    if !key.chars().all(allowed) {
        return Some("a metadata key may hold only a-z, 0-9, '_', '.' and '-'".into());
    }
    None
}

/// Checks `metadata` against the rules; a refusal names the field
/// (`metadata`, or `metadata.KEY` for one key or its value).
pub fn check(metadata: &Metadata) -> Result<(), FieldError> {
    if metadata.len() > MAX_KEYS {
        return Err(FieldError::new(
            "metadata",
            "too_long",
            format!(
                "metadata holds at most {MAX_KEYS} keys, not {}",
                metadata.len()
            ),
        ));
    }
    for (key, value) in metadata {
        if let Some(problem) = key_problem(key) {
            return Err(FieldError::new(field(key), "metadata_key", problem));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(FieldError::new(
                field(key),
                "string_too_long",
                format!("a metadata value is at most {MAX_VALUE_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

/// Metadata from a decoded JSON value (`null` is none), checked.
pub fn from_value(value: Value) -> Result<Metadata, FieldError> {
    let map = match value {
        Value::Null => return Ok(Metadata::new()),
        Value::Object(map) => map,
        _ => {
            return Err(FieldError::new(
                "metadata",
                "dict_type",
                "metadata must be an object of string keys to string values",
            ));
        }
    };
    let mut metadata = Metadata::new();
    for (key, value) in map {
        let Value::String(value) = value else {
            return Err(FieldError::new(
                field(&key),
                "string_type",
                "a metadata value must be a string",
            ));
        };
        metadata.insert(key, value);
    }
    check(&metadata)?;
    Ok(metadata)
}

/// The metadata fields of a query string (`meta.KEY=VALUE` pairs), checked;
/// a refusal names the field as the query does (`meta.KEY`).
pub fn from_query<'a>(
    pairs: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<Metadata, FieldError> {
    let metadata: Metadata = pairs
        .into_iter()
        .filter_map(|(name, value)| {
            let key = name.strip_prefix(QUERY_PREFIX)?;
            Some((key.to_owned(), value.clone()))
        })
        .collect();
    check(&metadata).map_err(|mut error| {
        error.field = match error.field.strip_prefix("metadata.") {
            Some(key) => format!("{QUERY_PREFIX}{key}"),
            None => "meta".to_owned(),
        };
        error
    })?;
    Ok(metadata)
}

/// The field a refusal of `key` names.
pub fn field(key: &str) -> String {
    format!("metadata.{key}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn good_metadata_is_taken_and_bad_is_refused_naming_the_key() {
        let good = from_value(json!({"customer": "42", "region.eu-1_a": ""})).unwrap();
        assert_eq!(good.len(), 2);
        assert!(from_value(Value::Null).unwrap().is_empty());
        let refused = |value: Value| from_value(value).unwrap_err();
        assert_eq!(refused(json!(["a"])).field, "metadata");
        assert_eq!(refused(json!({"n": 1})).field, "metadata.n");
        assert_eq!(refused(json!({"Customer": "1"})).field, "metadata.Customer");
        assert_eq!(refused(json!({"": "1"})).field, "metadata.");
        assert_eq!(refused(json!({"k": "x".repeat(257)})).field, "metadata.k");
        assert!(from_value(json!({"k": "x".repeat(256)})).is_ok());
        let long_key = "k".repeat(65);
        assert_eq!(
            refused(json!({ long_key.clone(): "1" })).field,
            format!("metadata.{long_key}")
        );
        let many: serde_json::Map<String, Value> =
            (0..33).map(|n| (format!("k{n}"), json!("v"))).collect();
        assert_eq!(refused(Value::Object(many)).field, "metadata");
    }

    #[test]
    fn query_pairs_with_the_prefix_are_metadata() {
        let pairs: std::collections::HashMap<String, String> = [
            ("meta.customer".to_owned(), "42".to_owned()),
            ("status".to_owned(), "pending".to_owned()),
        ]
        .into();
        let metadata = from_query(&pairs).unwrap();
        assert_eq!(metadata, Metadata::from([("customer".into(), "42".into())]));
        let bad: std::collections::HashMap<String, String> =
            [("meta.A".to_owned(), "1".to_owned())].into();
        assert_eq!(from_query(&bad).unwrap_err().field, "meta.A");
    }
}
