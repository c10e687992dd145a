//! Flow control per op (`[flow.OPNAME]`, `FnOp::with_flow`): a key that
//! groups an op's tasks (a template over metadata and params), how many of
//! one key may run at once across every instance, the weights by which
//! claims share an op between keys, and a rate of starts (per op or per
//! key) across every instance.

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
    /// At most this many starts in any window (every attempt counts).
    pub rate: Option<Rate>,
    /// The rate holds per key, not per op.
    pub rate_per_key: bool,
}

impl Flow {
    /// What claims of the op go by, when it has a key or a rate.
    pub fn rule(&self) -> Option<ClaimRule> {
        if self.key.is_none() && self.rate.is_none() {
            return None;
        }
        Some(ClaimRule {
            keyed: self.key.is_some(),
            key_concurrency: self.key_concurrency,
            weights: self.weights.clone(),
            rate: self.rate,
            rate_per_key: self.rate_per_key && self.key.is_some(),
        })
    }
}

/// A rate of starts: at most `count` in any `window_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Starts allowed in a window.
    pub count: u32,
    /// The window, in ms.
    pub window_ms: i64,
}

impl Rate {
    /// Reads `N/s`, `N/min` or `N/h` (N from 1 to 1,000,000).
    pub fn parse(text: &str) -> Result<Rate, String> {
        let (count, unit) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a rate such as \"100/min\" (also /s, /h)"))?;
        let count: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|count| (1..=1_000_000).contains(count))
            .ok_or_else(|| format!("{text:?}: the count must be 1 to 1000000"))?;
        let window_ms = match unit.trim() {
            "s" => 1_000,
            "min" => 60_000,
            "h" => 3_600_000,
            other => return Err(format!("{text:?}: the unit {other:?} is not s, min or h")),
        };
        Ok(Rate { count, window_ms })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.window_ms {
            1_000 => "s",
            60_000 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// What claims of an op with flow control go by. With a key (`keyed`),
/// keys take turns, each key's turn starting up to its weight (default 1)
/// of its tasks (highest priority, then oldest, first), never more than
/// `key_concurrency` of one key running at once. With a rate, no more
/// starts than it allows in any window (per key with `rate_per_key`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimRule {
    /// Whether the op's tasks have keys to take turns by.
    pub keyed: bool,
    /// At most this many tasks of one key run at once.
    pub key_concurrency: Option<u32>,
    /// Tasks a key starts per turn (default 1).
    pub weights: BTreeMap<String, u32>,
    /// At most this many starts in any window.
    pub rate: Option<Rate>,
    /// The rate holds per key.
    pub rate_per_key: bool,
}

impl ClaimRule {
    /// The rule of a keyed op with no other setting (tests).
    pub fn keyed() -> ClaimRule {
        ClaimRule {
            keyed: true,
            ..ClaimRule::default()
        }
    }
}

impl ClaimRule {
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

    #[test]
    fn rates_parse_per_second_minute_and_hour() {
        assert_eq!(
            Rate::parse("100/min"),
            Ok(Rate {
                count: 100,
                window_ms: 60_000
            })
        );
        assert_eq!(Rate::parse("5/s").unwrap().window_ms, 1_000);
        assert_eq!(Rate::parse(" 7 / h ").unwrap().to_string(), "7/h");
        for wrong in ["100", "0/s", "x/s", "10/day", "2000000/s"] {
            assert!(Rate::parse(wrong).is_err(), "{wrong:?}");
        }
    }
}
