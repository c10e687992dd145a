//! The JSON Schema of an exec op's params, as `GET /v1/ops` shows it.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::spec::{ParamSpec, ParamType};

/// The JSON Schema of an op's params.
pub(crate) fn schema(params: &BTreeMap<String, ParamSpec>) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, spec) in params {
        let mut property = Map::new();
        property.insert("type".into(), json!(spec.kind.as_str()));
        if spec.kind == ParamType::Array {
            property.insert("items".into(), json!({"type": "string"}));
        }
        if let Some(description) = &spec.description {
            property.insert("description".into(), json!(description));
        }
        // A secret's default (a key the operator configured) is not shown.
        if let Some(default) = spec.default.as_ref().filter(|_| !spec.secret) {
            property.insert("default".into(), default.clone());
        }
        if let Some(minimum) = &spec.minimum {
            property.insert("minimum".into(), Value::Number(minimum.clone()));
        }
        if let Some(maximum) = &spec.maximum {
            property.insert("maximum".into(), Value::Number(maximum.clone()));
        }
        // Nor a secret's allowed values (they would be its candidates).
        if let Some(allowed) = spec.allowed.as_ref().filter(|_| !spec.secret) {
            property.insert("enum".into(), Value::Array(allowed.clone()));
        }
        if spec.secret {
            property.insert("writeOnly".into(), json!(true));
            property.insert("format".into(), json!("password"));
        }
        if spec.required && spec.default.is_none() {
            required.push(json!(name));
        }
        properties.insert(name.clone(), Value::Object(property));
    }
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}
