//! A damaged disk at start-up: `tasktape serve` exits 1 with one line that
//! names the file, what is wrong and what to do (it never starts accepting
//! tasks it cannot record). A full disk is a small tmpfs filled up; a
//! read-only one is an immutable file and directory (root ignores modes).

use std::path::Path;
use std::process::Command;

use crate::support::tasktape;

/// Runs `tasktape serve` on `data`; returns its exit code and stderr lines
/// (it must end by itself within 20 s: a start that serves is a failure).
fn start(data: &Path) -> (Option<i32>, Vec<String>) {
    let mut child = tasktape()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let since = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if since.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`tasktape serve` on {} started instead of refusing",
                data.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr.lines().map(str::to_owned).collect())
}

/// A 2 MiB tmpfs, unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount() -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "cannot mount a tmpfs (the test needs root)"
        );
        SmallDisk(dir)
    }

    fn fill(&self) {
        self.fill_with("filler");
    }

    /// Writes `name` until the disk is full (the write's error is expected).
    fn fill_with(&self, name: &str) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=4k"])
            .arg(format!("of={}", self.0.path().join(name).display()))
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn assert_one_line(code: Option<i32>, lines: &[String], path: &Path, says: &str) {
    assert_eq!(code, Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    let line = &lines[0];
    assert!(line.starts_with("tasktape serve: "), "{line}");
    assert!(
        line.contains(&*path.to_string_lossy()),
        "names the file: {line}"
    );
    assert!(line.contains(says), "says {says:?}: {line}");
    assert!(line.contains("then start again"), "says what to do: {line}");
}

#[test]
fn a_full_disk_at_start_is_one_clear_line() {
    // A store created on the disk, then the disk filled up.
    let disk = SmallDisk::mount();
    let data = disk.0.path().join("data");
    let (code, lines) = start_briefly(&data);
    assert_eq!(code, None, "the first start serves: {lines:?}");
    disk.fill();
    let (code, lines) = start(&data);
    assert_one_line(code, &lines, &data.join("tasktape.db"), "full");
    // No store yet and no room to make one (the old store's room taken too).
    std::fs::remove_dir_all(&data).unwrap();
    disk.fill_with("filler-2");
    let (code, lines) = start(&data);
    assert_one_line(code, &lines, &data.join("tasktape.db"), "full");
}

#[test]
fn a_read_only_store_at_start_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, lines) = start_briefly(&data);
    assert_eq!(code, None, "the first start serves: {lines:?}");
    let db = data.join("tasktape.db");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(data.join(format!("tasktape.db{suffix}")));
    }
    let chattr = |flag: &str| {
        let status = Command::new("chattr")
            .arg(flag)
            .arg(&db)
            .arg(&data)
            .status()
            .expect("chattr runs (e2fsprogs)");
        assert!(status.success(), "chattr {flag}");
    };
    chattr("+i");
    let (code, lines) = start(&data);
    chattr("-i");
    assert_one_line(code, &lines, &db, "read-only");
}

/// Starts `tasktape serve` on `data`, lets it make its store, stops it
/// (SIGTERM); `None` when it was still serving then.
fn start_briefly(data: &Path) -> (Option<i32>, Vec<String>) {
    let mut server = crate::support::serve(data, &[]);
    let early = server
        .child
        .try_wait()
        .unwrap()
        .map(|status| status.code().unwrap_or(-1));
    let _ = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status();
    let _ = server.child.wait();
    (early, server.log_lines())
}
