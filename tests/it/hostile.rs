//! Hostile input over raw sockets: each request gets the safe answer, and the upstream never
//! receives what the rules forbid.
//!
//! One file per category of `SECURITY.md`, its cases rows of tables of raw requests and the
//! answers they must get, run by the harness (`harness.rs`), which also checks what reached
//! the recording upstreams. Each test starts its own patgate.
//!
//! Category 8 (HTTP/2) is in tests/it/h2.rs: patgate speaks HTTP/2 only on its TLS
//! listener (by ALPN), and these tests speak plain HTTP/1.1.

mod harness;

mod admin;
mod authorization;
mod framing;
mod git_query;
mod large;
mod methods;
mod paths;
mod slow;
mod spoofing;
mod token_store;
