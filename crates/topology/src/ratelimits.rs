//! Synapse's own rate limits (`rc_*`), set for every tier rather than left at the defaults of
//! Synapse's version. Per-person limits are the same at every tier: a person types no faster in
//! a larger organisation. What grows with the tier is what many people share: one egress address
//! (logins from behind a company's NAT), one room (an all-hands that everyone joins at 9:00), and
//! the federation traffic of a larger server. The router's backpressure (`crate::backpressure`)
//! protects the processes from the sum; these protect them from one client.

use mxstack_spec::Tier;
use serde_json::{json, Value};

/// How many times the small tier's shared limits a tier gets.
fn shared_factor(tier: Tier) -> f64 {
    match tier {
        Tier::T100 => 1.0,
        Tier::T1k => 2.0,
        Tier::T5k => 4.0,
        Tier::T10k => 6.0,
        Tier::T20k => 8.0,
    }
}

fn rate(per_second: f64, burst_count: f64) -> Value {
    let burst_count = burst_count.round() as u32;
    json!({ "per_second": per_second, "burst_count": burst_count })
}

/// The `rc_*` settings of `tier`, for homeserver.yaml.
pub fn synapse_settings(tier: Tier) -> Vec<(&'static str, Value)> {
    let f = shared_factor(tier);
    vec![
        // A person's messages; Element Call's key sharing and membership heartbeats need 0.5/s
        // with a burst of 30 (its self-hosting guide).
        ("rc_message", rate(0.5, 30.0)),
        ("rc_registration", rate(0.17, 3.0)),
        (
            "rc_login",
            json!({
                "address": rate(0.05 * f, 10.0 * f),
                "account": rate(0.05, 5.0),
                "failed_attempts": rate(0.17, 3.0),
            }),
        ),
        (
            "rc_joins",
            json!({ "local": rate(0.1, 10.0), "remote": rate(0.01, 10.0) }),
        ),
        ("rc_joins_per_room", rate(1.0 * f, 10.0 * f)),
        (
            "rc_invites",
            json!({
                "per_room": rate(0.3, 10.0),
                "per_user": rate(0.003, 5.0),
                "per_issuer": rate(0.3, 10.0),
            }),
        ),
        ("rc_3pid_validation", rate(0.003, 5.0)),
        ("rc_admin_redaction", rate(1.0, 50.0)),
        ("rc_media_create", rate(10.0, 50.0)),
        ("rc_delayed_event_mgmt", rate(1.0, 20.0)),
        (
            "rc_federation",
            json!({
                "window_size": 1000,
                "sleep_limit": 10,
                "sleep_delay": 500,
                "reject_limit": 50,
                "concurrent": (3.0 * f) as u32,
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_are_limited_alike_and_shared_limits_grow_with_the_tier() {
        let get = |t: Tier, k: &str| {
            synapse_settings(t)
                .into_iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v)
                .unwrap()
        };
        assert_eq!(get(Tier::T100, "rc_message"), get(Tier::T20k, "rc_message"));
        let burst = |t| get(t, "rc_joins_per_room")["burst_count"].as_u64().unwrap();
        assert!(burst(Tier::T20k) > burst(Tier::T1k) && burst(Tier::T1k) > burst(Tier::T100));
        let names: Vec<&str> = synapse_settings(Tier::T1k)
            .iter()
            .map(|(n, _)| *n)
            .collect();
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(names, unique);
        assert!(names.iter().all(|n| n.starts_with("rc_")));
    }
}
