//! The PostgreSQL store against a real server: shared database, outages and restarts.
