//! schemathesis (PyPI) against a live `tasktape serve`, from its own
//! `GET /openapi.json`: no 5xx, every error in the envelope, every status,
//! content type, header and body as described, wrong methods 405.
//! `scripts/with-postgres` installs it and sets `TASKTAPE_SCHEMATHESIS`;
//! without it this test fails (never skips).

use crate::support::serve;

#[test]
fn schemathesis_finds_nothing_against_the_description() {
    let st = std::env::var("TASKTAPE_SCHEMATHESIS").unwrap_or_else(|_| {
        panic!(
            "TASKTAPE_SCHEMATHESIS is not set: run the tests through scripts/with-postgres, \
             which installs schemathesis from PyPI"
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.ci/schemathesis.toml");
    let output = std::process::Command::new(&st)
        .args(["--config-file", config, "run"])
        .arg(format!("{}/openapi.json", server.base))
        .args(["--checks", "all", "--max-examples", "30", "--no-color"])
        .env("NO_COLOR", "1")
        // It keeps a cache in its working directory: not in the source tree.
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {st}: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{stderr}"
    );
    let cases = stdout
        .lines()
        .find(|line| line.contains(" generated"))
        .unwrap_or("(no count)");
    eprintln!("schemathesis: {}", cases.trim());
    assert!(stdout.contains("passed"), "{stdout}");
}
