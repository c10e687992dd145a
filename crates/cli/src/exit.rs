//! The exit codes of the client verbs (dikw's client's): 0 succeeded,
//! 1 failed (or the call failed), 2 usage errors, 124 client-side timeout,
//! 130 cancelled or interrupted.

use std::process::ExitCode;

/// How a verb ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Succeeded,
    Failed,
    Usage,
    TimedOut,
    Cancelled,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> ExitCode {
        ExitCode::from(match self {
            Exit::Succeeded => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::TimedOut => 124,
            Exit::Cancelled => 130,
        })
    }
}

/// A verb that could not do its job: one line for stderr and an exit code.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Failure::new(Exit::Usage, message)
    }
}
