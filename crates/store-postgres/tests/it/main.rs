//! The Postgres store against a real PostgreSQL server (`TASKTAPE_TEST_PG`,
//! which `scripts/with-postgres` starts and exports). Without it these tests
//! fail: they never pass by skipping.

mod contract;
mod creates;
mod finishes;
mod postgres;
mod support;
