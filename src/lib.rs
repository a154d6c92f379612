//! patgate: a reverse proxy that admits git clients and build agents by personal access
//! token, and forwards what the token's scopes and organizations allow.
//!
//! The request path ([`proxy`]) reads the validated [`config`] and the in-memory token
//! copy ([`store::token_cache`]); the [`store`] itself, the [`admin`] API, the CLI and the
//! config loader are separate rooms that the request path does not enter.

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod build_info;
pub mod clock;
pub mod config;
pub mod guard;
pub mod proxy;
pub mod server;
pub mod store;
pub mod telemetry;
