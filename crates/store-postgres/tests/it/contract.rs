//! The store contract kit from `tasktape-core`, unchanged, on PostgreSQL.

use crate::support::fresh;

tasktape_core::store_contract_tests!(fresh);
