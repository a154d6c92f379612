//! patgate's integration tests: one binary, real processes, the real git client.

mod support;

mod admin;
mod cli;
mod cluster;
mod git;
mod hostile;
mod postgres;
mod proxy;
