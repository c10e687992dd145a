//! `[schedules.NAME]`: tasks submitted on a cron schedule, checked at
//! start-up against the registered ops (their op must exist and take their
//! params).

use std::collections::BTreeMap;

use serde::Deserialize;
use tasktape_core::OpRegistry;
use tasktape_core::cron::{CatchUp, Schedule};

use crate::ConfigError;

/// `[schedules.NAME]` as the config file gives it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// The op to submit.
    pub op: String,
    /// Five-field cron: minute hour day-of-month month day-of-week.
    pub cron: String,
    /// The IANA time zone the cron is read in (default "UTC").
    #[serde(default)]
    pub timezone: Option<String>,
    /// The params each task gets (default none).
    #[serde(default)]
    pub params: Option<toml::Value>,
    /// After downtime: "none", "last" (default) or "all" missed slots.
    #[serde(default)]
    pub catch_up: Option<String>,
    /// The metadata each task gets (string keys to string values).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The schedules, checked: each names a registered op that takes its params.
pub(crate) fn resolve(
    specs: BTreeMap<String, ScheduleSpec>,
    ops: &OpRegistry,
) -> Result<Vec<Schedule>, ConfigError> {
    let mut schedules = Vec::new();
    for (name, spec) in specs {
        let bad = |key: &str, why: String| ConfigError(format!("schedule {name:?}: {key}: {why}"));
        if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
            return Err(bad(
                "name",
                "must be non-empty, without spaces or ':'".to_owned(),
            ));
        }
        let Some(op) = ops.get(&spec.op) else {
            let known = ops.names().join(", ");
            return Err(bad(
                "op",
                format!("no op {:?} is registered (known: {known})", spec.op),
            ));
        };
        let params = match spec.params {
            None => serde_json::Value::Object(Default::default()),
            Some(value) => {
                serde_json::to_value(value).map_err(|error| bad("params", error.to_string()))?
            }
        };
        let params = op
            .prepare(params)
            .map_err(|error| bad("params", error.to_string()))?;
        let catch_up = match spec.catch_up.as_deref() {
            None => CatchUp::default(),
            Some(text) => CatchUp::parse(text).ok_or_else(|| {
                bad(
                    "catch_up",
                    format!("{text:?} is not one of \"none\", \"last\", \"all\""),
                )
            })?,
        };
        tasktape_core::tasktape_wire::metadata::check(&spec.metadata)
            .map_err(|error| bad(&error.field, error.message))?;
        let timezone = spec.timezone.as_deref().unwrap_or("UTC");
        let mut schedule = Schedule::new(&name, &spec.op, &spec.cron, timezone, params, catch_up)
            .map_err(|error| {
            let key = if error.contains("time zone") {
                "timezone"
            } else {
                "cron"
            };
            bad(key, error)
        })?;
        schedule.metadata = spec.metadata;
        schedules.push(schedule);
    }
    Ok(schedules)
}
