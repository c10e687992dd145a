//! The client against a real server on 127.0.0.1, and through a proxy that
//! cuts connections.

mod calls;
mod follow;
mod support;
