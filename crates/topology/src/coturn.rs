//! coturn's settings (feature `calls`), written once for both targets: Kubernetes passes them
//! as `--name=value` arguments, the local stack as a config file. Only what [`Turn`] (from the
//! target's addressing) says differs between the two.
//!
//! TURN relays media to any address a client names, so without `denied-peer-ip` a TURN server
//! is an open door into the network it runs in (CVE-2020-26262 and the "TURN proxy" reports):
//! every private, loopback, link-local and shared range is denied, and the cluster's pod and
//! service networks (`calls.cluster_cidrs`) when they lie outside those.

use std::ops::RangeInclusive;

use crate::HostPort;
use crate::Topology;

/// Where coturn runs, as the target addresses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// The host and port clients are given in `turn:` URIs.
    pub public: HostPort,
    /// The address it binds (None: every address).
    pub listen_ip: Option<String>,
    /// TLS (`turns:`), where the target has a certificate for it.
    pub tls: Option<TurnTls>,
    pub relay: RangeInclusive<u16>,
    /// The address it tells clients for relayed candidates.
    pub external_ip: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnTls {
    pub port: u16,
    pub cert: String,
    pub key: String,
}

/// One coturn option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    Flag(&'static str),
    Value(&'static str, String),
    /// The TURN shared secret: each target supplies it its own way, never in a ConfigMap.
    Secret(&'static str),
}

/// Address space coturn never relays to (the hardening list of the "TURN proxy" research, Enable
/// Security 2020): "this" network, RFC 1918, shared address space (carrier-grade NAT, often pod
/// networks), loopback, link-local, the IETF, documentation and benchmarking ranges, 6to4 relay
/// anycast, reserved space; for IPv6 loopback, NAT64 and IPv4-mapped addresses (both reach IPv4
/// inside), Teredo, 6to4, discard-only, unique local and link-local. coturn takes ranges as
/// `first-last`, not CIDR (a CIDR line is rejected at start with "Wrong address format").
pub const DENIED_PEERS: [&str; 22] = [
    "0.0.0.0-0.255.255.255",
    "10.0.0.0-10.255.255.255",
    "100.64.0.0-100.127.255.255",
    "127.0.0.0-127.255.255.255",
    "169.254.0.0-169.254.255.255",
    "172.16.0.0-172.31.255.255",
    "192.0.0.0-192.0.0.255",
    "192.0.2.0-192.0.2.255",
    "192.88.99.0-192.88.99.255",
    "192.168.0.0-192.168.255.255",
    "198.18.0.0-198.19.255.255",
    "198.51.100.0-198.51.100.255",
    "203.0.113.0-203.0.113.255",
    "240.0.0.0-255.255.255.255",
    "::1",
    "64:ff9b::-64:ff9b::ffff:ffff",
    "::ffff:0.0.0.0-::ffff:255.255.255.255",
    "100::-100::ffff:ffff:ffff:ffff",
    "2001::-2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
    "2002::-2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
];

/// A CIDR (or a single address) as coturn's `first-last` range; None when it is neither.
pub fn peer_range(cidr: &str) -> Option<String> {
    if let Ok(ip) = cidr.parse::<std::net::IpAddr>() {
        return Some(ip.to_string());
    }
    let net: ipnet::IpNet = cidr.parse().ok()?;
    Some(format!("{}-{}", net.network(), net.broadcast()))
}

/// Every option, in the order the targets write them.
pub fn settings(t: &Topology, turn: &Turn) -> Vec<Setting> {
    use Setting::*;
    let mut s = vec![Value("log-file", "stdout".into())];
    if let Some(ip) = &turn.listen_ip {
        s.push(Value("listening-ip", ip.clone()));
        s.push(Value("relay-ip", ip.clone()));
    }
    s.push(Value("listening-port", turn.public.port.to_string()));
    match &turn.tls {
        Some(tls) => s.push(Value("tls-listening-port", tls.port.to_string())),
        None => s.extend([Flag("no-tls"), Flag("no-dtls")]),
    }
    s.extend([
        Value("min-port", turn.relay.start().to_string()),
        Value("max-port", turn.relay.end().to_string()),
        // TURN REST credentials: Synapse hands out HMAC(secret, expiry:user), coturn checks them.
        Flag("use-auth-secret"),
        Secret("static-auth-secret"),
        Value("realm", t.config.domain.clone()),
        Value("external-ip", turn.external_ip.clone()),
    ]);
    if let Some(tls) = &turn.tls {
        s.push(Value("cert", tls.cert.clone()));
        s.push(Value("pkey", tls.key.clone()));
    }
    s.extend([
        Flag("fingerprint"),
        Flag("no-cli"),
        Flag("no-tlsv1"),
        Flag("no-tlsv1_1"),
        Flag("no-multicast-peers"),
    ]);
    s.extend(
        DENIED_PEERS
            .iter()
            .map(|r| Value("denied-peer-ip", r.to_string())),
    );
    // The cluster's own networks, when they lie outside the ranges above (validated: MX-CFG-010).
    let calls = &t.config.calls;
    s.extend(
        calls
            .cluster_cidrs
            .iter()
            .filter_map(|c| peer_range(c))
            .map(|r| Value("denied-peer-ip", r)),
    );
    s.extend(
        calls
            .allowed_peer_ips
            .iter()
            .filter_map(|c| peer_range(c))
            .map(|r| Value("allowed-peer-ip", r)),
    );
    // coturn refuses loopback peers before it reads the lists: an exception on loopback needs
    // that refusal off, and then the denied 127.0.0.0/8 range is what still refuses the rest.
    let loopback = |c: &String| {
        let net: Option<ipnet::IpNet> = c
            .parse()
            .ok()
            .or_else(|| c.parse::<std::net::IpAddr>().ok().map(Into::into));
        net.is_some_and(|n| n.network().is_loopback())
    };
    if calls.allowed_peer_ips.iter().any(loopback) {
        s.push(Flag("allow-loopback-peers"));
    }
    s
}

/// The `turn_uris` Synapse hands to clients.
pub fn uris(turn: &Turn) -> Vec<String> {
    let HostPort { host, port } = &turn.public;
    let mut uris = vec![
        format!("turn:{host}:{port}?transport=udp"),
        format!("turn:{host}:{port}?transport=tcp"),
    ];
    if let Some(tls) = &turn.tls {
        uris.push(format!("turns:{host}:{}?transport=tcp", tls.port));
    }
    uris
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxstack_spec::{Config, Feature, Tier};

    #[test]
    fn cidrs_become_coturn_ranges() {
        assert_eq!(
            peer_range("203.0.113.0/24").as_deref(),
            Some("203.0.113.0-203.0.113.255")
        );
        assert_eq!(peer_range("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(
            peer_range("fd00::/8").as_deref(),
            Some("fd00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
        );
        assert_eq!(peer_range("10.0.0.0/33"), None);
        assert_eq!(peer_range("garbage"), None);
    }

    fn turn(tls: bool) -> Turn {
        Turn {
            public: HostPort {
                host: "turn.acme.test".into(),
                port: 3478,
            },
            listen_ip: None,
            tls: tls.then(|| TurnTls {
                port: 5349,
                cert: "/c".into(),
                key: "/k".into(),
            }),
            relay: 49152..=49183,
            external_ip: "203.0.113.7".into(),
        }
    }

    #[test]
    fn never_relays_into_private_space_and_the_secret_stays_a_marker() {
        let t = Topology::build(&Config::new(
            "acme.test",
            Tier::T100,
            [Feature::Calls].into(),
        ));
        let s = settings(&t, &turn(true));
        for range in ["127.0.0.0-127.255.255.255", "10.0.0.0-10.255.255.255"] {
            assert!(s.contains(&Setting::Value("denied-peer-ip", range.into())));
        }
        assert!(s.contains(&Setting::Secret("static-auth-secret")));
        assert!(s.contains(&Setting::Flag("no-cli")));
        assert!(!s.contains(&Setting::Flag("no-tls")));
        // Without a certificate: no TLS listener, and no `turns:` URI offered.
        let plain = settings(&t, &turn(false));
        assert!(plain.contains(&Setting::Flag("no-tls")));
        assert_eq!(uris(&turn(false)).len(), 2);
        assert_eq!(
            uris(&turn(true))[2],
            "turns:turn.acme.test:5349?transport=tcp"
        );
    }
}
