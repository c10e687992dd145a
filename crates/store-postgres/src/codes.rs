//! The answer codes (`out_code`) of `schema.rs`'s PL/pgSQL functions, named
//! once here. The SQL writes them as placeholders (`{append.dropped}`),
//! which [`crate::schema::render`] fills in from [`PLACEHOLDERS`], so the
//! two sides cannot disagree.

/// `append_events` per input row (`append_task_events`: per task, with
/// `out_base` for `out_seq`).
pub(crate) mod append {
    /// Appended at `out_seq` (the task's events at `out_base` + k).
    pub(crate) const APPENDED: i16 = 0;
    /// Not running (or another instance's): dropped (`out_seq`, or
    /// `out_base`, = the tape's last seq).
    pub(crate) const DROPPED: i16 = 1;
    /// No such task.
    pub(crate) const NOT_FOUND: i16 = 2;
}

/// `start_task`.
pub(crate) mod start {
    /// Started.
    pub(crate) const STARTED: i16 = 0;
    /// Already running.
    pub(crate) const ALREADY_RUNNING: i16 = 1;
    /// Already finished (`out_status`).
    pub(crate) const ALREADY_FINISHED: i16 = 2;
    /// No such task.
    pub(crate) const NOT_FOUND: i16 = 3;
}

/// `finish_task`.
pub(crate) mod finish {
    /// Finished (`out_status`, `out_seq`).
    pub(crate) const FINISHED: i16 = 0;
    /// Already finished (`out_status`).
    pub(crate) const ALREADY_FINISHED: i16 = 1;
    /// Pending: cannot succeed.
    pub(crate) const NOT_STARTED: i16 = 2;
    /// No such task.
    pub(crate) const NOT_FOUND: i16 = 3;
    /// A reap of a task not running, or whose lease was renewed.
    pub(crate) const NOT_EXPIRED: i16 = 4;
    /// (`requeue_task`) Pending again for another attempt (`out_seq`).
    pub(crate) const REQUEUED: i16 = 5;
    /// (`finish_owned`, `requeue_task`) Running, held by another instance now.
    pub(crate) const NOT_OWNER: i16 = 6;
}

/// `request_cancel`.
pub(crate) mod cancel {
    /// A pending task cancelled (`out_seq`).
    pub(crate) const CANCELLED: i16 = 0;
    /// Recorded for a running task (`out_owner`).
    pub(crate) const REQUESTED: i16 = 1;
    /// Already terminal (`out_status`).
    pub(crate) const ALREADY_TERMINAL: i16 = 2;
    /// No such task.
    pub(crate) const NOT_FOUND: i16 = 3;
}

/// `delete_task`.
pub(crate) mod delete {
    /// Deleted with its tape.
    pub(crate) const DELETED: i16 = 0;
    /// Not terminal (`out_status`).
    pub(crate) const NOT_TERMINAL: i16 = 1;
    /// No such task.
    pub(crate) const NOT_FOUND: i16 = 2;
}

/// Each placeholder the SQL may use and its value.
pub(crate) const PLACEHOLDERS: &[(&str, i16)] = &[
    ("{append.appended}", append::APPENDED),
    ("{append.dropped}", append::DROPPED),
    ("{append.not_found}", append::NOT_FOUND),
    ("{start.started}", start::STARTED),
    ("{start.already_running}", start::ALREADY_RUNNING),
    ("{start.already_finished}", start::ALREADY_FINISHED),
    ("{start.not_found}", start::NOT_FOUND),
    ("{finish.finished}", finish::FINISHED),
    ("{finish.already_finished}", finish::ALREADY_FINISHED),
    ("{finish.not_started}", finish::NOT_STARTED),
    ("{finish.not_found}", finish::NOT_FOUND),
    ("{finish.not_expired}", finish::NOT_EXPIRED),
    ("{finish.requeued}", finish::REQUEUED),
    ("{finish.not_owner}", finish::NOT_OWNER),
    ("{cancel.cancelled}", cancel::CANCELLED),
    ("{cancel.requested}", cancel::REQUESTED),
    ("{cancel.already_terminal}", cancel::ALREADY_TERMINAL),
    ("{cancel.not_found}", cancel::NOT_FOUND),
    ("{delete.deleted}", delete::DELETED),
    ("{delete.not_terminal}", delete::NOT_TERMINAL),
    ("{delete.not_found}", delete::NOT_FOUND),
];
