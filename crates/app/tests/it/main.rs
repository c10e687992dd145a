//! The facade's tests: a real `App` (real SQLite file, real HTTP server on
//! 127.0.0.1:0) running exec ops as real processes.

mod embedding;
mod exec;
mod origin;
mod support;
