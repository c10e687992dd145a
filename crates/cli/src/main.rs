//! The `tasktape` binary: parses arguments and calls the library.

mod config;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Durable background tasks with an ordered event tape.
#[derive(Parser, Debug)]
#[command(name = "tasktape", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP server on a local SQLite store.
    Serve(config::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => config::serve(args),
    }
}
