//! Backpressure at the router: how many requests each Synapse process is handed at once, how
//! long an excess request may wait for a free slot, and the fast refusal it gets otherwise.
//!
//! A Synapse process runs Python in one thread: requests beyond a few per core only queue inside
//! it, where every one of them still costs work (and replication to the other processes) while
//! its client's timeout runs out. Under 10x the seed's peak the worker topology spent its two
//! cores on requests nobody waited for any more, and its send rate collapsed run after run
//! (docs/BENCHMARKS.md). So the router holds the excess instead: each server takes at most
//! `maxconn` requests, a request waits at most `QUEUE_TIMEOUT_MS` in the router's queue, and is
//! then refused with 429 and `Retry-After`, which Matrix clients honour. Requests whose client
//! hung up leave the queue (`abortonclose`). Federation goes first in every queue.

use crate::workers::{WorkerGroup, WorkerKind};
use crate::Topology;

/// Concurrent requests per core of a process's CPU request: enough to keep it busy while some
/// wait on PostgreSQL or replication, few enough that each finishes quickly.
pub const REQUESTS_PER_CORE: u32 = 8;
/// No process gets fewer slots than this (a 250m worker still serves a few at once).
pub const MIN_SLOTS: u32 = 4;
/// How long a request waits in the router's queue before the 429: well under a second, so an
/// overloaded deployment answers fast instead of timing out.
pub const QUEUE_TIMEOUT_MS: u32 = 500;
/// The wait a refused client is told to keep (`Retry-After`, `retry_after_ms`).
pub const RETRY_AFTER_SECS: u32 = 2;
/// Long-polls (`/sync`) mostly wait; a synchrotron holds its share of every user's long-poll,
/// with this much room (percent) for requests beside them and an unequal hash.
pub const LONG_POLL_HEADROOM_PERCENT: u32 = 50;

/// The slots one process of `cpu_millis` gets for request/response traffic.
pub fn request_slots(cpu_millis: u32) -> u32 {
    (cpu_millis * REQUESTS_PER_CORE)
        .div_ceil(1000)
        .max(MIN_SLOTS)
}

/// Slots for the long-polls of the tier's users spread over `processes` processes.
pub fn long_poll_slots(topology: &Topology, processes: u32) -> u32 {
    let users = topology.sizing.concurrent_users;
    users.div_ceil(processes.max(1)) * (100 + LONG_POLL_HEADROOM_PERCENT) / 100
}

/// Per-server `maxconn` for the processes of `group`.
pub fn group_slots(topology: &Topology, group: &WorkerGroup) -> u32 {
    let requests = request_slots(group.resources.cpu_millis);
    if group.kind == WorkerKind::Synchrotron {
        long_poll_slots(topology, group.max_replicas) + requests
    } else {
        requests
    }
}

/// Per-server `maxconn` for Synapse main. When no synchrotron runs (a single process), main
/// holds every user's long-poll too: without those slots the long-polls alone fill main's
/// request slots and every other request is refused (found by bench/tier.py).
pub fn main_slots(topology: &Topology, serves_syncs: bool) -> u32 {
    let main = topology
        .sizing
        .resources_for(mxstack_spec::Component::SynapseMain, &topology.config);
    let requests = request_slots(main.cpu_millis);
    if serves_syncs {
        requests + long_poll_slots(topology, 1)
    } else {
        requests
    }
}

/// The router's answer to a request it could not place within `QUEUE_TIMEOUT_MS` (HAProxy's 503,
/// sent as a complete response): 429 with the Matrix rate-limit error, so clients back off.
pub fn busy_response() -> String {
    let body = format!(
        "{{\"errcode\":\"M_LIMIT_EXCEEDED\",\"error\":\"The server is busy; retry later\",\"retry_after_ms\":{}}}\n",
        RETRY_AFTER_SECS * 1000
    );
    format!(
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: {RETRY_AFTER_SECS}\r\nCache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxstack_spec::{Config, Tier};

    #[test]
    fn slots_follow_the_cpu_and_long_polls_follow_the_users() {
        assert_eq!(request_slots(250), MIN_SLOTS);
        assert_eq!(request_slots(1000), 8);
        assert_eq!(request_slots(2000), 16);
        for tier in [Tier::T100, Tier::T1k, Tier::T20k] {
            let t = Topology::build(&Config::new("a.test", tier, Default::default()));
            let sync = t.groups_of(WorkerKind::Synchrotron).next().unwrap();
            // Every user's long-poll fits on the synchrotrons the autoscaler may run.
            assert!(group_slots(&t, sync) * sync.max_replicas >= t.sizing.concurrent_users);
            // A single process holds every long-poll and still has its request slots.
            let main = main_slots(&t, false);
            assert_eq!(main_slots(&t, true), main + long_poll_slots(&t, 1));
            assert!(main_slots(&t, true) >= t.sizing.concurrent_users + main);
            let generic = t.groups_of(WorkerKind::Generic).next().unwrap();
            assert_eq!(
                group_slots(&t, generic),
                request_slots(generic.resources.cpu_millis)
            );
        }
    }

    #[test]
    fn the_busy_answer_is_a_complete_429_with_retry_after() {
        let r = busy_response();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 429 "));
        assert!(head.contains(&format!("Retry-After: {RETRY_AFTER_SECS}")));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["errcode"], "M_LIMIT_EXCEEDED");
    }
}
