//! What the derived description is given before it is served, so that
//! client generators (openapi-python-client, openapi-typescript) make
//! working clients from it:
//!
//! - `Event` is a `oneOf` of one object per event type, each with its
//!   `type`, its fields, `seq` and `ts`, and a `discriminator` on `type`
//!   (the derived form, `allOf[EventBody (a oneOf), {seq, ts}]`, is one
//!   generators cannot take); a worker's `WorkerEvent` likewise (its three
//!   types, `ts` optional). `EventBody` is then unused and dropped.
//! - Security once at the root: a bearer token, or none (a server started
//!   without tokens takes every call; one with tokens answers 401 without
//!   one); the routes open whatever the config (the probes, this
//!   description) opt out with `security: []`.
//! - A bare `{"type": "object"}` (an op's params, a JSON Schema, a result)
//!   says `additionalProperties: true`, so typed languages take any keys.
//! - A status list holds at least one status.

use serde_json::{Map, Value, json};

/// Applies every change above to the derived description.
pub(crate) fn shape(mut doc: Value) -> Value {
    events(&mut doc);
    security(&mut doc);
    open_objects(&mut doc);
    if let Some(many) = doc
        .pointer_mut("/components/schemas/StatusFilter/oneOf")
        .and_then(Value::as_array_mut)
        .and_then(|variants| {
            variants
                .iter_mut()
                .find(|variant| variant["type"] == "array")
        })
    {
        many["minItems"] = json!(1);
    }
    doc
}

/// The per-type variants of `EventBody`, by their `type`.
fn variants(doc: &Value) -> Vec<(String, Value)> {
    doc.pointer("/components/schemas/EventBody/oneOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|variant| {
            let name = variant.pointer("/properties/type/enum/0")?.as_str()?;
            Some((name.to_owned(), variant.clone()))
        })
        .collect()
}

/// `progress` → `ProgressEvent`, `task_started` → `TaskStartedEvent`.
fn schema_name(kind: &str, suffix: &str) -> String {
    let mut name: String = kind
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect()
            })
        })
        .collect();
    name.push_str(suffix);
    name
}

fn with_fields(mut variant: Value, fields: &[(&str, Value)], required: &[&str]) -> Value {
    if let Some(properties) = variant.get_mut("properties").and_then(Value::as_object_mut) {
        for (name, schema) in fields {
            properties.insert((*name).to_owned(), schema.clone());
        }
    }
    if let Some(list) = variant.get_mut("required").and_then(Value::as_array_mut) {
        list.extend(required.iter().map(|name| json!(name)));
    }
    variant
}

fn one_of(names: Vec<(String, String)>, description: &str) -> Value {
    let refs: Vec<Value> = names
        .iter()
        .map(|(_, name)| json!({"$ref": format!("#/components/schemas/{name}")}))
        .collect();
    let mapping: Map<String, Value> = names
        .iter()
        .map(|(kind, name)| (kind.clone(), json!(format!("#/components/schemas/{name}"))))
        .collect();
    json!({
        "oneOf": refs,
        "discriminator": {"propertyName": "type", "mapping": mapping},
        "description": description,
    })
}

fn events(doc: &mut Value) {
    let variants = variants(doc);
    if variants.is_empty() {
        return;
    }
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let seq = json!({"type": "integer", "format": "int64", "minimum": 0, "description": "Its place on the tape (0 for heartbeats)."});
    let ts =
        json!({"$ref": "#/components/schemas/Timestamp", "description": "When it was written."});
    let mut tape = Vec::new();
    for (kind, variant) in &variants {
        let name = schema_name(kind, "Event");
        let schema = with_fields(
            variant.clone(),
            &[("seq", seq.clone()), ("ts", ts.clone())],
            &["seq", "ts"],
        );
        schemas.insert(name.clone(), schema);
        tape.push((kind.clone(), name));
    }
    let event = one_of(
        tape,
        "A tape event: its type's fields, its seq and its time.",
    );
    schemas.insert("Event".to_owned(), event);
    let reported = json!({"$ref": "#/components/schemas/Timestamp", "description": "When the worker saw it (clamped between the tape's last time and the server's now)."});
    let mut worker = Vec::new();
    for (kind, variant) in &variants {
        if !matches!(kind.as_str(), "progress" | "log" | "partial") {
            continue;
        }
        let name = schema_name(kind, "Report");
        schemas.insert(
            name.clone(),
            with_fields(variant.clone(), &[("ts", reported.clone())], &[]),
        );
        worker.push((kind.clone(), name));
    }
    let reported = one_of(worker, "An event a worker reports, with its own time.");
    schemas.insert("WorkerEvent".to_owned(), reported);
    schemas.remove("EventBody");
}

/// Security at the root; the open routes say `security: []`, the others
/// nothing (the root's).
fn security(doc: &mut Value) {
    doc["security"] = json!([{"bearer": []}, {}]);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let Some(operation) = operation.as_object_mut() else {
                continue;
            };
            let open = operation
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|list| {
                    list.len() == 1 && list[0].as_object().is_some_and(Map::is_empty)
                });
            if open {
                operation.insert("security".to_owned(), json!([]));
            } else {
                operation.remove("security");
            }
        }
    }
}

/// `additionalProperties: true` on every object schema that names no
/// properties and says nothing of others.
fn open_objects(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let bare = map.get("type") == Some(&json!("object"))
                && !map.contains_key("properties")
                && !map.contains_key("additionalProperties");
            if bare {
                map.insert("additionalProperties".to_owned(), json!(true));
            }
            for child in map.values_mut() {
                open_objects(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(open_objects),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_one_schema_per_type_with_a_discriminator() {
        let doc = shape(
            serde_json::to_value(<super::super::ApiDoc as utoipa::OpenApi>::openapi()).unwrap(),
        );
        let schemas = &doc["components"]["schemas"];
        assert!(schemas.get("EventBody").is_none());
        let event = &schemas["Event"];
        assert_eq!(event["discriminator"]["propertyName"], "type");
        assert_eq!(
            event["discriminator"]["mapping"]["progress"],
            "#/components/schemas/ProgressEvent"
        );
        let progress = &schemas["ProgressEvent"];
        for field in ["type", "phase", "current", "total", "seq", "ts"] {
            assert!(progress["properties"].get(field).is_some(), "{field}");
        }
        assert!(
            progress["required"]
                .as_array()
                .unwrap()
                .contains(&json!("seq"))
        );
        let reported = &schemas["WorkerEvent"];
        assert_eq!(reported["oneOf"].as_array().unwrap().len(), 3);
        assert!(schemas["LogReport"]["properties"].get("ts").is_some());
        // Security once; the probes opt out.
        assert_eq!(doc["security"], json!([{"bearer": []}, {}]));
        assert_eq!(doc["paths"]["/v1/healthz"]["get"]["security"], json!([]));
        assert!(doc["paths"]["/v1/tasks"]["get"].get("security").is_none());
        // An op's params take any keys.
        let body = &doc["paths"]["/v1/{op}"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"];
        assert_eq!(body["additionalProperties"], json!(true));
        let text = doc.to_string();
        assert!(!text.contains("EventBody"), "nothing refers to EventBody");
    }
}
