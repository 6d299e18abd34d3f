//! The audit log end to end (README "Audit log"), with real processes in both topologies: a
//! scripted series of pushes, pulls (local, anonymous and through the cache from an upstream the
//! test starts), a delete and refused requests against a Trow with a user; then the events query
//! returns exact counts per action, user and repository, its filters and pages hold together,
//! the pull view counts and dates pulls and sees a cached tag that moved upstream; all the same
//! after a kill -9 of every process and a restart; and no log or audit file holds a password.
//! Rotation keeps the newest files, and a torn last line is skipped, then cut at the next start.
//!
//! Each scenario has its own `127.0.0.23x` address for the upstream it starts.

#[path = "audit/scenarios.rs"]
mod scenarios;

use trow_tests::both_topologies;

both_topologies!(
    scenarios::a_scripted_series_is_on_record,
    "127.0.0.236",
    "127.0.0.237"
);
both_topologies!(scenarios::rotation_and_a_torn_line);
