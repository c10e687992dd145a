//! Clients generated from `/openapi.json` work (issue 26): this build's
//! server is described, linted with Redocly's recommended rules, and used
//! through openapi-typescript's types (with `tsc --strict`) and
//! openapi-python-client's package — `scripts/check-generated-clients`,
//! which installs its tools under `target/` (npm, PyPI) the first time.

use std::process::Command;

#[test]
fn clients_generated_from_the_description_work_in_typescript_and_python() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new(root.join("scripts/check-generated-clients"))
        .arg(env!("CARGO_BIN_EXE_tasktape"))
        .output()
        .expect("the script runs (bash, node and npm, python3 are needed)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{text}");
    assert!(output.status.success(), "generated clients failed:\n{text}");
    assert!(text.contains("typescript client: ok") && text.contains("python client: ok"));
}
