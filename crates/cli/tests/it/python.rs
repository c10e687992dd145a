//! The Python package (`python/`) held to its standards from the Rust test
//! run, so the README's one test command covers it: `mypy --strict`,
//! `ruff check`, `ruff format --check`, and its pytest suite against this
//! build's `tasktape` (SQLite, and PostgreSQL through `TASKTAPE_TEST_PG`).
//! The tools live in a venv under `target/` made on first use (Python ≥
//! 3.10: pyenv's 3.12 when there, else `python3`), installed from PyPI.
//! Fails, never skips, when Python or the venv cannot be had.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Python ≥ 3.10 to make the venv with.
fn python() -> PathBuf {
    let pyenv = Command::new("pyenv")
        .arg("root")
        .output()
        .ok()
        .and_then(|out| {
            let root = String::from_utf8(out.stdout).ok()?;
            let candidate = Path::new(root.trim()).join("versions/3.12.1/bin/python3.12");
            candidate.exists().then_some(candidate)
        });
    pyenv.unwrap_or_else(|| PathBuf::from("python3"))
}

/// The venv with the package (editable) and its dev tools.
fn venv() -> PathBuf {
    let venv = repo().join("target/pyvenv");
    let ready = venv.join(".tasktape-dev-installed-2");
    if ready.exists() {
        return venv;
    }
    let made = Command::new(python())
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python runs");
    assert!(
        made.success(),
        "python -m venv failed (Python ≥ 3.10 with venv is needed)"
    );
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-e"])
        .arg(format!("{}[dev]", repo().join("python").display()))
        .status()
        .expect("pip runs");
    assert!(
        pip.success(),
        "pip install -e python[dev] failed (PyPI must be reachable)"
    );
    std::fs::write(&ready, "").unwrap();
    venv
}

fn run(venv: &Path, tool: &str, args: &[&str]) {
    // `python -m TOOL`: needs no console script (an install cut short can
    // leave a package without its script).
    let output = Command::new(venv.join("bin/python"))
        .args(["-m", tool])
        .args(args)
        .current_dir(repo().join("python"))
        .env("TASKTAPE_BIN", env!("CARGO_BIN_EXE_tasktape"))
        .env(
            "TASKTAPE_TEST_POSTGRES_URL",
            std::env::var("TASKTAPE_TEST_PG").unwrap_or_default(),
        )
        .output()
        .unwrap_or_else(|error| panic!("{tool} runs: {error}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("== {tool} {}\n{text}", args.join(" "));
    assert!(
        output.status.success(),
        "{tool} {} failed:\n{text}",
        args.join(" ")
    );
}

#[test]
fn the_python_package_is_typed_linted_and_passes_its_tests() {
    assert!(
        std::env::var("TASKTAPE_TEST_PG").is_ok_and(|url| !url.is_empty()),
        "TASKTAPE_TEST_PG is not set: run the tests through scripts/with-postgres"
    );
    let venv = venv();
    run(&venv, "mypy", &[]);
    run(&venv, "ruff", &["check", "."]);
    run(&venv, "ruff", &["format", "--check", "."]);
    run(&venv, "pytest", &["-q", "-p", "no:cacheprovider"]);
}
