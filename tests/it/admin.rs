//! The admin API over HTTP: every endpoint, its errors and its authorization.
