//! patgate's integration tests: one binary, real processes, the real git client.

mod support;

mod cli;
mod git;
mod proxy;
