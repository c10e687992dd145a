//! How a followed tape is shown: live bars in a terminal (one per progress
//! phase, logs and partials printed above them, the final result as JSON),
//! one line per event in a pipe or with `--plain`, JSON lines with `--json`.
//!
//! Live output goes to stdout, the same stream whose terminal-ness picks
//! the mode, so bars never draw into a pipe.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use tasktape_client::{Event, EventBody, Status};

/// How output is rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bars and spinners (stdout is a terminal).
    Live,
    /// One line per event, plain text.
    Plain,
    /// One JSON object per line.
    Json,
}

impl Mode {
    /// `--json` wins, then `--plain`; otherwise live on a terminal.
    pub fn pick(json: bool, plain: bool) -> Mode {
        if json {
            Mode::Json
        } else if plain || !std::io::stdout().is_terminal() {
            Mode::Plain
        } else {
            Mode::Live
        }
    }
}

/// Renders one tape's events as they arrive.
pub struct TapeView {
    mode: Mode,
    bars: Option<Bars>,
}

struct Bars {
    multi: MultiProgress,
    phases: HashMap<String, ProgressBar>,
}

/// Longest one-line summary of a partial result or detail in live mode.
const SUMMARY_CHARS: usize = 100;

impl TapeView {
    pub fn new(mode: Mode) -> Self {
        let bars = (mode == Mode::Live).then(|| Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            phases: HashMap::new(),
        });
        TapeView { mode, bars }
    }

    /// Prints a line above the bars (or plainly when there are none).
    pub fn note(&self, line: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    /// Shows one event.
    /// Shows one event; false when stdout is gone (a pipe's reader quit),
    /// so the caller can stop quietly.
    pub fn event(&mut self, event: &Event) -> bool {
        let line = match self.mode {
            Mode::Json => serde_json::to_string(event).expect("an event serializes"),
            Mode::Plain => plain_line(event),
            Mode::Live => {
                self.live(event);
                return true;
            }
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
    }

    fn live(&mut self, event: &Event) {
        let Some(bars) = self.bars.as_mut() else {
            return; // abandoned
        };
        match &event.body {
            EventBody::TaskStarted { op, .. } => {
                let _ = bars.multi.println(format!("started {op}"));
            }
            EventBody::Progress {
                phase,
                current,
                total,
                detail,
            } => {
                let bar = bars
                    .phases
                    .entry(phase.clone())
                    .or_insert_with(|| new_bar(&bars.multi, phase, *total));
                if *total > 0 {
                    if bar.length() != Some(*total) {
                        bar.set_style(counted_style());
                        bar.set_length(*total);
                    }
                } else if bar.length().is_some() {
                    bar.set_style(spinner_style());
                    bar.unset_length();
                }
                bar.set_position(*current);
                bar.set_message(detail.as_ref().map(summary).unwrap_or_default());
                if *total > 0 && current >= total {
                    bar.finish();
                }
            }
            EventBody::Log { level, message } => {
                let _ = bars.multi.println(format!("[{level}] {message}"));
            }
            EventBody::Partial { kind, payload } => {
                let _ = bars
                    .multi
                    .println(format!("partial {kind}: {}", summary(payload)));
            }
            EventBody::Final {
                status,
                result,
                error,
            } => {
                for bar in bars.phases.values() {
                    if !bar.is_finished() {
                        if *status == Status::Succeeded {
                            bar.finish();
                        } else {
                            bar.abandon();
                        }
                    }
                }
                // The finished bars stay on screen; the outcome goes below
                // them (the last bar's line has no line break yet).
                if !bars.phases.is_empty() {
                    println!();
                }
                match status {
                    Status::Succeeded => {
                        println!("{}", pretty(result.as_ref().unwrap_or(&Value::Null)));
                    }
                    Status::Failed => {
                        if let Some(error) = error {
                            eprintln!("failed: {} ({})", error.message, error.code);
                            println!(
                                "{}",
                                pretty(&serde_json::to_value(error).unwrap_or_default())
                            );
                        } else {
                            eprintln!("failed");
                        }
                    }
                    _ => eprintln!("{status}"),
                }
            }
            EventBody::Heartbeat {} => {}
        }
    }

    /// Stops drawing; the bars stay as they were (interrupt, timeout, error)
    /// and what is printed next goes below them.
    pub fn abandon(&mut self) {
        if let Some(bars) = self.bars.take() {
            for bar in bars.phases.values() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
            if !bars.phases.is_empty() {
                println!();
            }
        }
    }
}

fn new_bar(multi: &MultiProgress, phase: &str, total: u64) -> ProgressBar {
    let bar = if total > 0 {
        ProgressBar::new(total).with_style(counted_style())
    } else {
        ProgressBar::no_length().with_style(spinner_style())
    };
    let bar = multi.add(bar.with_prefix(phase.to_owned()));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn counted_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>12.cyan.bold} [{bar:30.green/white}] {pos}/{len} {rate} ETA {eta} {wide_msg}",
    )
    .expect("a valid template")
    .with_key("rate", rate)
    .progress_chars("=> ")
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>12.cyan.bold} {spinner} {pos} {rate} {wide_msg}")
        .expect("a valid template")
        .with_key("rate", rate)
}

/// Units per second with one decimal (indicatif's own shows four).
fn rate(state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write) {
    let _ = write!(out, "{:.1}/s", state.per_sec());
}

/// Compact JSON cut to one short line.
fn summary(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= SUMMARY_CHARS {
        return text;
    }
    let cut: String = text.chars().take(SUMMARY_CHARS - 1).collect();
    format!("{cut}…")
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("a value serializes")
}

/// `text` with line breaks escaped, so an event stays on one line.
fn one_line(text: &str) -> String {
    text.replace('\r', "\\r").replace('\n', "\\n")
}

/// `#seq time type …`, one line per event.
pub fn plain_line(event: &Event) -> String {
    let head = format!("#{} {} {}", event.seq, event.ts, event.body.kind().as_str());
    match &event.body {
        EventBody::TaskStarted { op, .. } => format!("{head} {op}"),
        EventBody::Progress {
            phase,
            current,
            total,
            detail,
        } => {
            let total = if *total > 0 {
                total.to_string()
            } else {
                "?".to_owned()
            };
            let detail = match detail {
                Some(detail) => format!(" {detail}"),
                None => String::new(),
            };
            format!("{head} {phase} {current}/{total}{detail}")
        }
        EventBody::Log { level, message } => format!("{head} {level}: {}", one_line(message)),
        EventBody::Partial { kind, payload } => format!("{head} {kind} {payload}"),
        EventBody::Final {
            status,
            result,
            error,
        } => match (result, error) {
            (Some(result), _) => format!("{head} {status} {result}"),
            (None, Some(error)) => format!(
                "{head} {status} {}: {}",
                error.code,
                one_line(&error.message)
            ),
            (None, None) => format!("{head} {status}"),
        },
        EventBody::Heartbeat {} => head,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_carry_each_kind_on_one_line() {
        let event: Event = serde_json::from_str(
            r#"{"type":"progress","phase":"echo","current":2,"total":0,"detail":null,"seq":3,"ts":"2026-11-27T22:05:20.471Z"}"#,
        )
        .unwrap();
        assert_eq!(
            plain_line(&event),
            "#3 2026-11-27T22:05:20.471Z progress echo 2/?"
        );
        let event: Event = serde_json::from_str(
            r#"{"type":"final","status":"failed","error":{"code":"boom","message":"it broke\non two lines"},"seq":4,"ts":"2026-11-27T22:05:20.471Z"}"#,
        )
        .unwrap();
        let line = plain_line(&event);
        assert_eq!(
            line,
            "#4 2026-11-27T22:05:20.471Z final failed boom: it broke\\non two lines"
        );
    }

    #[test]
    fn summaries_are_cut_to_one_short_line() {
        let long = Value::String("x".repeat(500));
        let text = summary(&long);
        assert_eq!(text.chars().count(), SUMMARY_CHARS);
        assert!(text.ends_with('…'));
        assert_eq!(summary(&serde_json::json!({"a": 1})), r#"{"a":1}"#);
    }
}
