//! patgate's integration tests: one binary, real processes, the real git client.

mod certs;
mod support;

mod admin;
mod answers;
mod audit;
mod cli;
mod cluster;
mod console;
mod differential;
mod duplex;
mod faults;
mod git;
mod h2;
mod hostile;
mod house;
mod http1;
mod last_used;
mod limits;
mod messages;
mod narrow;
mod observe;
mod postgres;
mod proxy;
mod readme;
mod reload;
mod streams;
mod tls;
mod upgrade;
mod upstream_tls;
