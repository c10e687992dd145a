//! The `tasktape` binary, run as a process: `serve`, the client verbs, and
//! the live display under a pseudo-terminal.

mod batch;
mod blackhole;
mod browser;
mod clocks;
mod crash;
mod dashboard;
mod dikw;
mod disk;
mod drain;
mod exec;
mod flow;
mod fuzz;
mod generated;
mod ids;
mod jobs;
mod jobs_pg;
mod metadata;
mod multi;
mod otlp;
mod outage;
mod pty;
mod python;
mod serve;
mod slow;
mod sql_submit;
mod support;
mod tls;
mod tokens;
mod verbs;
mod workers;
mod workers_pg;
