//! Params checked as they will travel to the program: every string a
//! program gets (each argument, each `NAME=value` of its environment,
//! `TASKTAPE_PARAMS` with all the params as JSON) must fit the kernel's
//! limit for one string, and all of them together the limit for an exec;
//! no string may hold a NUL byte (the kernel would cut it there). Judged at
//! submit, so a task that could never start is a 422 naming the param,
//! never a `spawn_failed` later.

use serde_json::{Map, Value};
use tasktape_core::ParamsError;

use crate::template::Template;

/// Linux's limit on one argument or environment string (`MAX_ARG_STRLEN`,
/// 32 pages), its terminating NUL included.
pub(crate) const MAX_ARG_STRLEN: usize = 32 * 4096;

/// What the arguments and environment may take together: `ARG_MAX` (from
/// the system, a quarter of the stack limit on Linux) less a margin for
/// what the kernel adds (the program's path, auxiliary vectors).
fn arg_max() -> usize {
    let system = nix::unistd::sysconf(nix::unistd::SysconfVar::ARG_MAX)
        .ok()
        .flatten()
        .and_then(|limit| usize::try_from(limit).ok())
        .unwrap_or(2 * 1024 * 1024);
    system.saturating_sub(16 * 1024)
}

/// The param that makes `strings` largest: the one whose value is largest.
fn largest<'a>(params: &'a Map<String, Value>, names: impl Iterator<Item = &'a str>) -> String {
    names
        .max_by_key(|name| params.get(*name).map_or(0, size))
        .unwrap_or("params")
        .to_owned()
}

fn size(value: &Value) -> usize {
    match value {
        Value::String(text) => text.len(),
        other => other.to_string().len(),
    }
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains('\0') || has_nul(value)),
        _ => false,
    }
}

fn too_big(field: String, message: String) -> ParamsError {
    ParamsError::new(field, "string_too_long", message)
}

/// Checks `params` (validated already) as the program would get them.
pub(crate) fn check(
    params: &Map<String, Value>,
    argv: &[Template],
    env: &[(String, Template)],
    inherited: usize,
) -> Result<(), ParamsError> {
    if let Some((name, _)) = params.iter().find(|(_, value)| has_nul(value)) {
        return Err(ParamsError::new(
            name.clone(),
            "string_nul",
            "must not contain a NUL byte (a program's arguments and environment cannot carry one)",
        ));
    }
    let kib = MAX_ARG_STRLEN / 1024;
    let mut total = inherited;
    let all = Value::Object(params.clone()).to_string();
    let carried = "TASKTAPE_PARAMS=".len() + all.len() + 1;
    if carried > MAX_ARG_STRLEN {
        return Err(too_big(
            largest(params, params.keys().map(String::as_str)),
            format!(
                "the params together are {} KiB as JSON; a program gets them in TASKTAPE_PARAMS, one environment string of at most {kib} KiB",
                all.len() / 1024
            ),
        ));
    }
    total += carried + std::mem::size_of::<usize>();
    for template in argv {
        for element in template.render(params) {
            if element.len() + 1 > MAX_ARG_STRLEN {
                return Err(too_big(
                    largest(params, template.params()),
                    format!(
                        "fills a program argument of {} KiB; at most {kib} KiB fit",
                        element.len() / 1024
                    ),
                ));
            }
            total += element.len() + 1 + std::mem::size_of::<usize>();
        }
    }
    for (variable, template) in env {
        if let Some(value) = template.render_one(params) {
            let length = variable.len() + 1 + value.len() + 1;
            if length > MAX_ARG_STRLEN {
                return Err(too_big(
                    largest(params, template.params()),
                    format!(
                        "fills the environment variable {variable} with {} KiB; at most {kib} KiB fit",
                        value.len() / 1024
                    ),
                ));
            }
            total += length + std::mem::size_of::<usize>();
        }
    }
    if total > arg_max() {
        return Err(too_big(
            largest(params, params.keys().map(String::as_str)),
            format!(
                "the program's arguments and environment would take {} KiB together; the system allows {} KiB",
                total / 1024,
                arg_max() / 1024
            ),
        ));
    }
    Ok(())
}
