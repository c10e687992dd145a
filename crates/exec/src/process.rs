//! Child processes: spawned from one long-lived thread (so that
//! `PR_SET_PDEATHSIG`, which fires when the *thread* that forked the child
//! exits, fires only when the server dies), each in its own process group,
//! signalled and reaped as a group.
//!
//! The server process makes itself a child subreaper on the first spawn, so
//! that a child's own children (say `sh -c 'sleep 1000 & wait'`) are
//! reparented to it when the child dies, and reaped by us after the group is
//! killed: they are gone, not zombies, even where PID 1 reaps nobody.
//!
//! Limits: a descendant that leaves the group (`setsid`, `setpgid`) is not
//! signalled with it, and if it is reparented to us and ends later it stays
//! a zombie until the server exits; `PR_SET_PDEATHSIG` covers the program
//! itself, not its children, so after a `kill -9` of the server a program's
//! own children live on (cgroups would cover both; not used here).

use std::io;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// Longest line kept; the rest of a longer line is dropped with a marker.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Appended to a line cut at [`MAX_LINE`].
pub(crate) const CUT_MARKER: &str = " [… line cut: longer than 64 KiB]";

struct SpawnRequest {
    command: Command,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// The spawner thread's queue; the thread lives as long as the process.
fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        if let Err(error) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(%error, "cannot become a child subreaper: an exec op's orphaned grandchildren may stay zombies");
        }
        let (sender, receiver) = mpsc::channel::<SpawnRequest>();
        let started = std::thread::Builder::new()
            .name("tasktape-exec-spawner".into())
            .spawn(move || {
                for mut request in receiver {
                    let _runtime = request.runtime.enter();
                    let spawned = request.command.spawn();
                    // The caller gave up (its run was aborted) before it got
                    // the child: nobody will watch it, so it must not run.
                    if let Err(Ok(child)) = request.reply.send(spawned)
                        && let Some(pgid) = child.id()
                    {
                        signal_group(pgid as i32, Signal::SIGKILL);
                    }
                }
            });
        if let Err(error) = started {
            // Without the thread no exec op can run; spawns answer an error.
            tracing::error!(%error, "cannot start the exec spawner thread");
        }
        sender
    })
}

/// Spawns `command` (already set up) in its own process group, with
/// `PR_SET_PDEATHSIG = SIGKILL`, from the spawner thread.
pub(crate) async fn spawn(mut command: Command) -> io::Result<Child> {
    command.process_group(0);
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: prctl(2) and getppid(2) are raw
    // system calls, and it allocates nothing on the success path.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The server died between fork and prctl: do not run orphaned.
            if nix::unistd::getppid().as_raw() != parent as i32 {
                return Err(io::Error::from_raw_os_error(libc_esrch()));
            }
            Ok(())
        });
    }
    let (reply, answer) = oneshot::channel();
    let request = SpawnRequest {
        command,
        runtime: tokio::runtime::Handle::current(),
        reply,
    };
    spawner()
        .send(request)
        .map_err(|_| io::Error::other("the exec spawner thread is not running"))?;
    answer
        .await
        .map_err(|_| io::Error::other("the exec spawner thread stopped"))?
}

fn libc_esrch() -> i32 {
    Errno::ESRCH as i32
}

/// Sends `signal` to the process group `pgid`; a group already gone is fine.
pub(crate) fn signal_group(pgid: i32, signal: Signal) {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(error) => tracing::warn!(pgid, %error, ?signal, "cannot signal process group"),
    }
}

/// Reaps the members of group `pgid` that are our children (grandchildren
/// reparented to us), waiting up to `limit` for them to die.
pub(crate) async fn reap_group(pgid: i32, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match waitpid(Pid::from_raw(-pgid), Some(WaitPidFlag::WNOHANG)) {
            // One reaped: look for more at once.
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => continue,
            // None of the group is our child any more.
            Err(Errno::ECHILD) => return,
            Ok(_) | Err(_) => {
                if tokio::time::Instant::now() >= deadline {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Kills a process group with SIGKILL when dropped, unless disarmed: an
/// aborted run (grace over, shutdown deadline) leaves nothing behind.
pub(crate) struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    pub(crate) fn new(pgid: i32) -> Self {
        GroupGuard { pgid: Some(pgid) }
    }

    pub(crate) fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            signal_group(pgid, Signal::SIGKILL);
            // Reap what is already dead; members that die later stay
            // zombies of this process until it exits (nothing waits on
            // this group any more).
            let _ = waitpid(Pid::from_raw(-pgid), Some(WaitPidFlag::WNOHANG));
        }
    }
}

/// Reads one line (split on `\n`, a trailing `\r` dropped) of at most
/// [`MAX_LINE`] bytes: longer lines are cut with [`CUT_MARKER`]. Invalid
/// UTF-8 is replaced, NUL bytes too (PostgreSQL refuses them). `None` at
/// the end of the stream.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buffer: &mut Vec<u8>,
) -> io::Result<Option<String>> {
    buffer.clear();
    let mut cut = false;
    let mut any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            if !any {
                return Ok(None);
            }
            break;
        }
        any = true;
        let (chunk, used, ended) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (&available[..end], end + 1, true),
            None => (available, available.len(), false),
        };
        let room = MAX_LINE.saturating_sub(buffer.len());
        if chunk.len() > room {
            cut = true;
        }
        buffer.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if ended {
            break;
        }
    }
    if !cut && buffer.last() == Some(&b'\r') {
        buffer.pop();
    }
    let mut line = String::from_utf8_lossy(buffer).into_owned();
    if line.contains('\0') {
        line = line.replace('\0', "\u{fffd}");
    }
    if cut {
        line.push_str(CUT_MARKER);
    }
    Ok(Some(line))
}

/// `SIGKILL` for 9, and so on.
pub(crate) fn signal_name(number: i32) -> String {
    Signal::try_from(number)
        .map(|signal| signal.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {number}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_cut_and_cleaned() {
        let mut input = Vec::new();
        input.extend_from_slice(b"one\r\ntwo\n");
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        input.extend_from_slice(b"\n\xff\x00end");
        let mut reader = tokio::io::BufReader::with_capacity(1000, &input[..]);
        let mut buffer = Vec::new();
        let mut lines = Vec::new();
        while let Some(line) = read_line(&mut reader, &mut buffer).await.unwrap() {
            lines.push(line);
        }
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "one");
        assert_eq!(lines[1], "two");
        assert_eq!(lines[2].len(), MAX_LINE + CUT_MARKER.len());
        assert!(lines[2].ends_with(CUT_MARKER));
        assert_eq!(lines[3], "\u{fffd}\u{fffd}end");
    }

    #[test]
    fn names_signals() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
    }
}
