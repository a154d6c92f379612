//! Hostile input over raw sockets: each request gets the safe answer, and the upstream never
//! receives what the rules forbid.
