//! `tasktape submit --batch FILE`: many submissions from JSON lines (each
//! line as `POST /v1/tasks` takes one; `-` reads standard input), sent
//! `POST /v1/tasks/batch` 10,000 (and at most about 48 MiB) at a time.
//! Prints one line per
//! submission, in order: the task's id, or why it was refused.

use std::io::{BufRead, BufReader, IsTerminal as _};

use serde_json::Value;
use tasktape_client::{BatchResult, MAX_BATCH_SUBMISSIONS, Submission};

use crate::args::SubmitArgs;
use crate::display::Mode;
use crate::exit::{Exit, Failure};

/// Bytes of JSON one request carries at most (the route takes 64 MiB).
const CHUNK_BYTES: usize = 48 << 20;

/// Splits `submissions` into requests of at most 10,000 and [`CHUNK_BYTES`].
fn chunks(submissions: &[Submission]) -> Vec<&[Submission]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, submission) in submissions.iter().enumerate() {
        let size = serde_json::to_vec(submission).map_or(0, |text| text.len()) + 1;
        if index > start && (index - start == MAX_BATCH_SUBMISSIONS || bytes + size > CHUNK_BYTES) {
            chunks.push(&submissions[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += size;
    }
    chunks.push(&submissions[start..]);
    chunks
}

/// Reads every line first: a line that is not a submission is a usage
/// error naming it, and nothing is sent.
fn read_lines(path: &str) -> Result<Vec<Submission>, Failure> {
    let reader: Box<dyn BufRead> = if path == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(path)
            .map_err(|error| Failure::usage(format!("--batch {path}: {error}")))?;
        Box::new(BufReader::new(file))
    };
    let mut submissions = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line =
            line.map_err(|error| Failure::usage(format!("--batch {path}:{number}: {error}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line).map_err(|error| {
            Failure::usage(format!("--batch {path}:{number}: not JSON: {error}"))
        })?;
        let submission = Submission::from_value(value).map_err(|error| {
            Failure::usage(format!(
                "--batch {path}:{number}: {}: {}",
                error.field, error.message
            ))
        })?;
        submissions.push(submission);
    }
    if submissions.is_empty() {
        return Err(Failure::usage(format!("--batch {path}: no submissions")));
    }
    Ok(submissions)
}

/// `tasktape submit --batch FILE`: exit 0 when every submission made (or
/// found) a task, 1 when any was refused.
pub async fn submit(args: SubmitArgs, path: &str) -> Result<Exit, Failure> {
    let submissions = read_lines(path)?;
    let remote = args.remote.connect()?;
    let mode = Mode::pick(args.output.json, args.output.plain);
    let total = submissions.len();
    let (mut sent, mut refused) = (0, 0);
    for chunk in chunks(&submissions) {
        let results = match remote.call(remote.client.submit_batch(chunk)).await {
            Ok(results) => results,
            // Those sent are written: say how far it got.
            Err(failure) if sent > 0 => {
                return Err(Failure::new(
                    failure.exit,
                    format!(
                        "{} (the first {sent} of {total} lines were sent and answered above; the rest were not)",
                        failure.message
                    ),
                ));
            }
            Err(failure) => return Err(failure),
        };
        for result in &results {
            sent += 1;
            match (mode, result) {
                (Mode::Json, result) => {
                    println!("{}", serde_json::to_string(result).expect("serializes"));
                }
                (_, BatchResult::Submitted(handle)) => println!("{}", handle.task_id),
                (_, BatchResult::Refused(envelope)) => {
                    println!("error {}: {}", envelope.error.code, envelope.error.message);
                }
            }
            if matches!(result, BatchResult::Refused(_)) {
                refused += 1;
            }
        }
        if total > MAX_BATCH_SUBMISSIONS && std::io::stderr().is_terminal() {
            eprintln!("sent {sent} of {total}");
        }
    }
    if mode == Mode::Live || refused > 0 {
        eprintln!(
            "submitted {} of {total} ({refused} refused)",
            total - refused
        );
    }
    Ok(if refused == 0 {
        Exit::Succeeded
    } else {
        Exit::Failed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_hold_at_most_ten_thousand_submissions_and_48_mib() {
        let small = vec![Submission::new("echo", serde_json::json!({})); 25_000];
        let sizes: Vec<usize> = chunks(&small).iter().map(|chunk| chunk.len()).collect();
        assert_eq!(sizes, vec![10_000, 10_000, 5_000]);
        let big = Submission::new("echo", serde_json::json!({"blob": "x".repeat(20 << 20)}));
        let sizes: Vec<usize> = chunks(&[big.clone(), big.clone(), big])
            .iter()
            .map(|chunk| chunk.len())
            .collect();
        assert_eq!(sizes, vec![2, 1]);
    }
}
