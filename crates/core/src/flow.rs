//! Flow control per op (`[flow.OPNAME]`, `FnOp::with_flow`): a key that
//! groups an op's tasks (a template over metadata and params), how many of
//! one key may run at once across every instance, and the weights by which
//! claims share an op between keys.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::Metadata;

/// An op's flow settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// What groups the op's tasks (`"{customer}"`); without it the other
    /// settings have nothing to act on.
    pub key: Option<KeyTemplate>,
    /// At most this many tasks of one key run at once.
    pub key_concurrency: Option<u32>,
    /// A key's share of the claims (default 1): a key of weight 4 starts up
    /// to 4 tasks where a key of weight 1 starts 1.
    pub weights: BTreeMap<String, u32>,
}

impl Flow {
    /// What claims of the op go by, when it has a key.
    pub fn rule(&self) -> Option<KeyRule> {
        self.key.as_ref().map(|_| KeyRule {
            key_concurrency: self.key_concurrency,
            weights: self.weights.clone(),
        })
    }
}

/// How claims share an op with a flow key between its keys: in turns,
/// each key's turn starting up to its weight (default 1) of its tasks
/// (highest priority, then oldest, first), never more than
/// `key_concurrency` of one key running at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRule {
    /// At most this many tasks of one key run at once.
    pub key_concurrency: Option<u32>,
    /// Tasks a key starts per turn (default 1).
    pub weights: BTreeMap<String, u32>,
}

impl KeyRule {
    /// The weight of `key`.
    pub fn weight(&self, key: &str) -> u32 {
        self.weights.get(key).copied().unwrap_or(1).max(1)
    }
}

/// A key template: text with `{field}` holes, each filled from the task's
/// metadata, else from its params (a string, a number or a boolean).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyTemplate {
    text: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

/// Why a task has no key: the field named by the template, and what is
/// wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyError {
    /// The field the template names.
    pub field: String,
    /// What is wrong, in one line.
    pub message: String,
}

impl KeyTemplate {
    /// Reads a template; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<KeyTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Text(rest.to_owned()));
                    rest = "";
                }
                Some(at) if rest[at..].starts_with('}') => {
                    return Err(format!("{text:?}: a '}}' without its '{{'"));
                }
                Some(at) => {
                    if at > 0 {
                        parts.push(Part::Text(rest[..at].to_owned()));
                    }
                    let after = &rest[at + 1..];
                    let end = after
                        .find('}')
                        .ok_or_else(|| format!("{text:?}: a '{{' without its '}}'"))?;
                    let field = &after[..end];
                    if field.is_empty() || field.contains('{') {
                        return Err(format!("{text:?}: each {{…}} names one field"));
                    }
                    parts.push(Part::Field(field.to_owned()));
                    rest = &after[end + 1..];
                }
            }
        }
        if !parts.iter().any(|part| matches!(part, Part::Field(_))) {
            return Err(format!(
                "{text:?} names no field: give one as {{field}}, e.g. \"{{customer}}\""
            ));
        }
        Ok(KeyTemplate {
            text: text.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The fields it names, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Field(field) => Some(field.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The key of a task with `metadata` and `params`.
    pub fn render(&self, metadata: &Metadata, params: &Value) -> Result<String, KeyError> {
        let mut key = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => key.push_str(text),
                Part::Field(field) => match metadata.get(field) {
                    Some(value) => key.push_str(value),
                    None => match params.get(field) {
                        Some(Value::String(text)) => key.push_str(text),
                        Some(Value::Number(number)) => key.push_str(&number.to_string()),
                        Some(Value::Bool(flag)) => key.push_str(&flag.to_string()),
                        Some(_) => {
                            return Err(KeyError {
                                field: format!("params.{field}"),
                                message: format!(
                                    "the flow key {:?} takes {field} as a string, number or boolean",
                                    self.text
                                ),
                            });
                        }
                        None => {
                            return Err(KeyError {
                                field: format!("metadata.{field}"),
                                message: format!(
                                    "the op's flow key {:?} needs {field}: give it in metadata or params",
                                    self.text
                                ),
                            });
                        }
                    },
                },
            }
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_parse_and_render_from_metadata_then_params() {
        let template = KeyTemplate::parse("{customer}-{region}").unwrap();
        assert_eq!(
            template.fields().collect::<Vec<_>>(),
            ["customer", "region"]
        );
        let metadata = Metadata::from([("customer".into(), "42".into())]);
        assert_eq!(
            template.render(&metadata, &json!({"region": "eu", "customer": "x"})),
            Ok("42-eu".to_owned())
        );
        assert_eq!(
            template.render(&Metadata::new(), &json!({"customer": 7, "region": true})),
            Ok("7-true".to_owned())
        );
        let missing = template.render(&metadata, &json!({})).unwrap_err();
        assert_eq!(missing.field, "metadata.region");
        let bad = template
            .render(&metadata, &json!({"region": [1]}))
            .unwrap_err();
        assert_eq!(bad.field, "params.region");
        for wrong in ["", "customer", "{customer", "customer}", "{}", "{a{b}}"] {
            assert!(KeyTemplate::parse(wrong).is_err(), "{wrong:?}");
        }
    }
}
