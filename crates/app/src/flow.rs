//! `[flow.OPNAME]`: flow control per op, checked at start-up (a bad one
//! exits 2 naming the op and the key). A table for an op no one declared
//! yet is kept: it applies when the op appears (a remote worker's op).

use std::collections::BTreeMap;

use serde::Deserialize;
use tasktape_core::flow::{Flow, KeyTemplate};

use crate::ConfigError;

/// `[flow.OPNAME]` as the config file gives it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    /// The key: a template over metadata and params, e.g. "{customer}".
    #[serde(default)]
    pub key: Option<String>,
    /// At most this many tasks of one key run at once (1–100,000).
    #[serde(default)]
    pub key_concurrency: Option<u32>,
    /// A key's share of the claims (default 1 each), e.g. { gold = 4 }.
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    /// At most this many starts in any window: "100/min" (also /s, /h).
    #[serde(default)]
    pub rate: Option<String>,
    /// The rate holds per key (default: per op).
    #[serde(default)]
    pub rate_per_key: bool,
}

/// The flows, checked.
pub(crate) fn resolve(
    specs: BTreeMap<String, FlowSpec>,
) -> Result<BTreeMap<String, Flow>, ConfigError> {
    let mut flows = BTreeMap::new();
    for (op, spec) in specs {
        let bad = |key: &str, why: String| ConfigError(format!("flow {op:?}: {key}: {why}"));
        let key = spec
            .key
            .as_deref()
            .map(KeyTemplate::parse)
            .transpose()
            .map_err(|why| bad("key", why))?;
        if key.is_none() {
            if spec.key_concurrency.is_some() {
                return Err(bad(
                    "key_concurrency",
                    "needs a key (e.g. key = \"{customer}\")".into(),
                ));
            }
            if !spec.weights.is_empty() {
                return Err(bad(
                    "weights",
                    "need a key (e.g. key = \"{customer}\")".into(),
                ));
            }
        }
        if spec.rate_per_key && key.is_none() {
            return Err(bad(
                "rate_per_key",
                "needs a key (e.g. key = \"{customer}\")".into(),
            ));
        }
        if spec.rate_per_key && spec.rate.is_none() {
            return Err(bad(
                "rate_per_key",
                "needs a rate (e.g. rate = \"100/min\")".into(),
            ));
        }
        let rate = spec
            .rate
            .as_deref()
            .map(tasktape_core::flow::Rate::parse)
            .transpose()
            .map_err(|why| bad("rate", why))?;
        if let Some(limit) = spec.key_concurrency
            && !(1..=100_000).contains(&limit)
        {
            return Err(bad(
                "key_concurrency",
                format!("{limit} is not 1 to 100000"),
            ));
        }
        for (name, weight) in &spec.weights {
            if !(1..=1000).contains(weight) {
                return Err(bad(
                    &format!("weights.{name}"),
                    format!("{weight} is not 1 to 1000"),
                ));
            }
        }
        flows.insert(
            op,
            Flow {
                key,
                key_concurrency: spec.key_concurrency,
                weights: spec.weights,
                rate,
                rate_per_key: spec.rate_per_key,
            },
        );
    }
    Ok(flows)
}
