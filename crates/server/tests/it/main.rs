//! The server through its public surface: the router with `oneshot`, and a
//! real socket on 127.0.0.1:0 for streaming and many followers.

mod followers;
mod metrics;
mod routes;
mod support;
mod traces;
