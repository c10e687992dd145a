//! The store contract kit from `tasktape-core`, unchanged, on SQLite.

use crate::fresh;

tasktape_core::store_contract_tests!(fresh);
