//! The `tasktape` binary: parses arguments and calls the library code of
//! each verb (`serve` in `serve`, the client verbs in `verbs`, their arguments in
//! `args`, following a tape in `follow`).

/// jemalloc, measured against the system allocator and mimalloc with the
/// load bench (`TASKTAPE_LOAD_ONLY=acd cargo bench -p tasktape --bench
/// load`, 3 runs each, before connection tasks shrank): 10,000 idle
/// followers 181–183 MiB (system 241–243, mimalloc 427), echo and follow
/// latency within the noise.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod args;
mod batch;
mod bulk;
mod display;
mod exit;
mod follow;
mod remote;
mod serve;
mod verbs;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Durable background tasks with an ordered event tape.
#[derive(Parser, Debug)]
#[command(name = "tasktape", version, about)]
struct Cli {
    /// The client verbs' flags, before the verb too (`--url`, `--token`,
    /// `--ca-cert`, `--json`, `--plain`)
    #[command(
        flatten,
        next_help_heading = "Client options (before or after the verb)"
    )]
    globals: args::Globals,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP server (SQLite in --data-dir, or PostgreSQL with --store)
    Serve(serve::ServeArgs),
    /// Start a task of an op (--wait: follow it until it ends)
    Submit(args::SubmitArgs),
    /// List, inspect, follow and cancel tasks
    #[command(subcommand)]
    Tasks(args::TasksCommand),
    /// List the ops the server runs
    Ops(args::OpsArgs),
    /// Serve a config file's exec ops ([ops.NAME]) for a server elsewhere
    Worker(worker::WorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let globals = cli.globals;
    let conflict = |conflicting: bool| {
        if conflicting {
            usage("--json and --plain cannot be used together");
        }
    };
    match cli.command {
        Command::Serve(args) => {
            if globals.given() {
                usage(
                    "the client flags (--url, --token, --ca-cert, --json, --plain) do not apply to `serve`; give serve's own flags after it",
                );
            }
            serve::serve(args)
        }
        Command::Submit(mut args) => {
            globals.apply(&mut args.remote, Some(&mut args.output));
            conflict(args.output.conflicting());
            verbs::run(verbs::Verb::Submit(args))
        }
        Command::Tasks(mut command) => {
            command.apply(&globals);
            conflict(command.conflicting());
            verbs::run(verbs::Verb::Tasks(command))
        }
        Command::Ops(mut args) => {
            globals.apply(&mut args.remote, Some(&mut args.output));
            conflict(args.output.conflicting());
            verbs::run(verbs::Verb::Ops(args))
        }
        Command::Worker(mut args) => {
            globals.apply(&mut args.remote, None);
            worker::run(args)
        }
    }
}

/// A usage error, as clap reports one (exit 2).
fn usage(message: &str) -> ! {
    use clap::CommandFactory as _;
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}
