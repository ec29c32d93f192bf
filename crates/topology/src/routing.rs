//! The endpoint table: which requests go to which kind of process, and how they stay sticky.
//!
//! One table feeds the HAProxy maps, the routing docs and the cross-check against Synapse's own
//! `generate_workers_map`. Each row carries example requests, so tests can prove the regex matches
//! what it claims and that the chosen worker really serves that path.

use serde::Serialize;

use crate::workers::{Stream, WorkerGroup, WorkerKind};
use crate::Topology;

/// Who should serve a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Kind(WorkerKind),
    /// The process that writes this stream (main when no worker does).
    StreamWriter(Stream),
    Main,
    /// The content scanner, which fetches from the media workers and passes on only clean bytes.
    ContentScanner,
}

/// How requests of one family stay on one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sticky {
    None,
    /// Hash of the access token: one user's /sync always hits the same synchrotron.
    AccessToken,
    /// Hash of the room ID in the path: one room's timeline on one worker.
    Room,
    /// Hash of the client address: inbound federation transactions from one server in order.
    Source,
}

impl Sticky {
    pub fn suffix(self) -> &'static str {
        match self {
            Sticky::None => "",
            Sticky::AccessToken => "-by-user",
            Sticky::Room => "-by-room",
            Sticky::Source => "-by-source",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Methods {
    Any,
    /// GET and HEAD only; other methods fall through to later rows (finally main).
    ReadOnly,
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// Request family, e.g. `sync`, `send`, `media-download`.
    pub family: &'static str,
    /// Anchored PCRE regex on the path.
    pub regex: &'static str,
    pub methods: Methods,
    pub target: Target,
    pub sticky: Sticky,
    /// Requests this row must match: (method, path).
    pub examples: &'static [(&'static str, &'static str)],
    /// Only when federation is on.
    pub federation: bool,
    /// Only when antivirus is on (the scanner rows come before the media rows they shadow).
    pub antivirus: bool,
}

const C: &str = "(api/v1|r0|v3|unstable)";
const _: () = assert!(!C.is_empty());

macro_rules! ep {
    ($family:expr, $regex:expr, $methods:ident, $target:expr, $sticky:ident, [$(($m:expr, $p:expr)),* $(,)?]) => {
        Endpoint { family: $family, regex: $regex, methods: Methods::$methods, target: $target, sticky: Sticky::$sticky,
                   examples: &[$(($m, $p)),*], federation: false, antivirus: false }
    };
    (av $family:expr, $regex:expr, $methods:ident, $sticky:ident, [$(($m:expr, $p:expr)),* $(,)?]) => {
        Endpoint { family: $family, regex: $regex, methods: Methods::$methods, target: Target::ContentScanner,
                   sticky: Sticky::$sticky, examples: &[$(($m, $p)),*], federation: false, antivirus: true }
    };
    (fed $family:expr, $regex:expr, $target:expr, $sticky:ident, [$(($m:expr, $p:expr)),* $(,)?]) => {
        Endpoint { family: $family, regex: $regex, methods: Methods::Any, target: $target, sticky: Sticky::$sticky,
                   examples: &[$(($m, $p)),*], federation: true, antivirus: false }
    };
}

use Target::{Kind, StreamWriter};
use WorkerKind::{Generic, MediaRepository, Synchrotron};

/// The table, in match order (first match wins). Paths follow Synapse's docs/workers.md.
pub fn endpoint_table() -> Vec<Endpoint> {
    vec![
        // --- sync: sticky per user
        ep!("sync", "^/_matrix/client/(r0|v3)/sync$", Any, Kind(Synchrotron), AccessToken, [("GET", "/_matrix/client/v3/sync")]),
        ep!("sync", "^/_matrix/client/(api/v1|r0|v3)/events$", Any, Kind(Synchrotron), AccessToken, [("GET", "/_matrix/client/v3/events")]),
        ep!("sync", "^/_matrix/client/(api/v1|r0|v3)/initialSync$", Any, Kind(Synchrotron), AccessToken, [("GET", "/_matrix/client/v3/initialSync")]),
        ep!("sync", "^/_matrix/client/(api/v1|r0|v3)/rooms/[^/]+/initialSync$", Any, Kind(Synchrotron), AccessToken, [("GET", "/_matrix/client/v3/rooms/!r:d/initialSync")]),
        // --- single-writer streams
        ep!("typing", "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/[^/]+/typing", Any, StreamWriter(Stream::Typing), None, [("PUT", "/_matrix/client/v3/rooms/!r:d/typing/@u:d")]),
        ep!("to-device", "^/_matrix/client/(r0|v3|unstable)/sendToDevice/", Any, StreamWriter(Stream::ToDevice), None, [("PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/txn1")]),
        ep!("account-data", "^/_matrix/client/(r0|v3|unstable)/.*/tags", Any, StreamWriter(Stream::AccountData), None, [("PUT", "/_matrix/client/v3/user/@u:d/rooms/!r:d/tags/m.favourite")]),
        ep!("account-data", "^/_matrix/client/(r0|v3|unstable)/.*/account_data", Any, StreamWriter(Stream::AccountData), None, [("PUT", "/_matrix/client/v3/user/@u:d/account_data/m.direct")]),
        ep!("receipts", "^/_matrix/client/(r0|v3|unstable)/rooms/[^/]+/receipt", Any, StreamWriter(Stream::Receipts), None, [("POST", "/_matrix/client/v3/rooms/!r:d/receipt/m.read/$e")]),
        ep!("receipts", "^/_matrix/client/(r0|v3|unstable)/rooms/[^/]+/read_markers", Any, StreamWriter(Stream::Receipts), None, [("POST", "/_matrix/client/v3/rooms/!r:d/read_markers")]),
        ep!("presence", "^/_matrix/client/(api/v1|r0|v3|unstable)/presence/", Any, StreamWriter(Stream::Presence), None, [("PUT", "/_matrix/client/v3/presence/@u:d/status")]),
        ep!("push-rules", "^/_matrix/client/(api/v1|r0|v3|unstable)/pushrules/", Any, StreamWriter(Stream::PushRules), None, [("PUT", "/_matrix/client/v3/pushrules/global/override/rule1")]),
        ep!("device-lists", "^/_matrix/client/(r0|v3)/delete_devices$", Any, StreamWriter(Stream::DeviceLists), None, [("POST", "/_matrix/client/v3/delete_devices")]),
        ep!("device-lists", "^/_matrix/client/(api/v1|r0|v3|unstable)/devices(/|$)", Any, StreamWriter(Stream::DeviceLists), None, [("GET", "/_matrix/client/v3/devices"), ("PUT", "/_matrix/client/v3/devices/DEV1")]),
        ep!("device-lists", "^/_matrix/client/(r0|v3|unstable)/keys/upload", Any, StreamWriter(Stream::DeviceLists), None, [("POST", "/_matrix/client/v3/keys/upload")]),
        ep!("device-lists", "^/_matrix/client/(api/v1|r0|v3|unstable)/keys/device_signing/upload$", Any, StreamWriter(Stream::DeviceLists), None, [("POST", "/_matrix/client/v3/keys/device_signing/upload")]),
        ep!("device-lists", "^/_matrix/client/(api/v1|r0|v3|unstable)/keys/signatures/upload$", Any, StreamWriter(Stream::DeviceLists), None, [("POST", "/_matrix/client/v3/keys/signatures/upload")]),
        // --- pagination: one room's history on one worker
        ep!("messages", "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/[^/]+/messages$", Any, Kind(Generic), Room, [("GET", "/_matrix/client/v3/rooms/!r:d/messages")]),
        // --- event sending: by room, so one room's events are created in order on one worker
        ep!("send", "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/[^/]+/send", Any, Kind(Generic), Room, [("PUT", "/_matrix/client/v3/rooms/!r:d/send/m.room.message/txn1")]),
        ep!("send", "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/[^/]+/redact", Any, Kind(Generic), Room, [("PUT", "/_matrix/client/v3/rooms/!r:d/redact/$e/txn2")]),
        ep!("send", "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/[^/]+/state/", Any, Kind(Generic), Room, [("PUT", "/_matrix/client/v3/rooms/!r:d/state/m.room.topic/")]),
        ep!("send", "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/[^/]+/(join|invite|leave|ban|unban|kick)$", Any, Kind(Generic), Room, [("POST", "/_matrix/client/v3/rooms/!r:d/invite"), ("POST", "/_matrix/client/v3/rooms/!r:d/join")]),
        ep!("send", "^/_matrix/client/(api/v1|r0|v3|unstable)/join/", Any, Kind(Generic), None, [("POST", "/_matrix/client/v3/join/!r:d")]),
        ep!("send", "^/_matrix/client/(api/v1|r0|v3|unstable)/knock/", Any, Kind(Generic), None, [("POST", "/_matrix/client/v3/knock/!r:d")]),
        ep!("profile", "^/_matrix/client/(api/v1|r0|v3|unstable)/profile/", Any, Kind(Generic), None, [("GET", "/_matrix/client/v3/profile/@u:d"), ("PUT", "/_matrix/client/v3/profile/@u:d/displayname")]),
        // --- client reads
        ep!("client", "^/_matrix/client/(api/v1|r0|v3|unstable)/createRoom$", Any, Kind(Generic), None, [("POST", "/_matrix/client/v3/createRoom")]),
        ep!("client", "^/_matrix/client/(api/v1|r0|v3|unstable)/publicRooms$", Any, Kind(Generic), None, [("GET", "/_matrix/client/v3/publicRooms")]),
        ep!("client", "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/[^/]+/joined_members$", Any, Kind(Generic), None, [("GET", "/_matrix/client/v3/rooms/!r:d/joined_members")]),
        ep!("client", "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/[^/]+/context/", Any, Kind(Generic), None, [("GET", "/_matrix/client/v3/rooms/!r:d/context/$e")]),
        ep!("client", "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/[^/]+/members$", Any, Kind(Generic), None, [("GET", "/_matrix/client/v3/rooms/!r:d/members")]),
        ep!("client", "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/[^/]+/state$", Any, Kind(Generic), None, [("GET", "/_matrix/client/v3/rooms/!r:d/state")]),
        ep!("client", "^/_matrix/client/v1/rooms/[^/]+/hierarchy$", Any, Kind(Generic), None, [("GET", "/_matrix/client/v1/rooms/!r:d/hierarchy")]),
        ep!("client", "^/_matrix/client/(v1|unstable)/rooms/[^/]+/relations/", Any, Kind(Generic), None, [("GET", "/_matrix/client/v1/rooms/!r:d/relations/$e")]),
        ep!("client", "^/_matrix/client/v1/rooms/[^/]+/threads$", Any, Kind(Generic), None, [("GET", "/_matrix/client/v1/rooms/!r:d/threads")]),
        ep!("client", "^/_matrix/client/(r0|v3|unstable)/account/3pid$", Any, Kind(Generic), None, [("GET", "/_matrix/client/v3/account/3pid")]),
        ep!("client", "^/_matrix/client/(r0|v3|unstable)/account/whoami$", Any, Kind(Generic), None, [("GET", "/_matrix/client/v3/account/whoami")]),
        ep!("client", "^/_matrix/client/versions$", Any, Kind(Generic), None, [("GET", "/_matrix/client/versions")]),
        ep!("client", "^/_matrix/client/(api/v1|r0|v3|unstable)/voip/turnServer$", Any, Kind(Generic), None, [("GET", "/_matrix/client/v3/voip/turnServer")]),
        ep!("client", "^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/[^/]+/event/", Any, Kind(Generic), None, [("GET", "/_matrix/client/v3/rooms/!r:d/event/$e")]),
        ep!("client", "^/_matrix/client/(api/v1|r0|v3|unstable)/joined_rooms$", Any, Kind(Generic), None, [("GET", "/_matrix/client/v3/joined_rooms")]),
        ep!("client", "^/_matrix/client/v1/rooms/[^/]+/timestamp_to_event$", Any, Kind(Generic), None, [("GET", "/_matrix/client/v1/rooms/!r:d/timestamp_to_event")]),
        ep!("client", "^/_matrix/client/(api/v1|r0|v3|unstable)/search$", Any, Kind(Generic), None, [("POST", "/_matrix/client/v3/search")]),
        ep!("client", "^/_matrix/client/(r0|v3|unstable)/user/[^/]+/filter(/|$)", Any, Kind(Generic), None, [("POST", "/_matrix/client/v3/user/@u:d/filter"), ("GET", "/_matrix/client/v3/user/@u:d/filter/1")]),
        ep!("client", "^/_matrix/client/(api/v1|r0|v3|unstable)/directory/room/", Any, Kind(Generic), None, [("GET", "/_matrix/client/v3/directory/room/%23a:d")]),
        ep!("client", "^/_matrix/client/(r0|v3|unstable)/capabilities$", Any, Kind(Generic), None, [("GET", "/_matrix/client/v3/capabilities")]),
        ep!("client", "^/_matrix/client/(r0|v3|unstable)/notifications$", Any, Kind(Generic), None, [("GET", "/_matrix/client/v3/notifications")]),
        ep!("client", "^/_matrix/client/(r0|v3|unstable)/user_directory/search$", Any, Kind(Generic), None, [("POST", "/_matrix/client/v3/user_directory/search")]),
        // --- end-to-end encryption reads
        ep!("keys", "^/_matrix/client/(r0|v3|unstable)/keys/query$", Any, Kind(Generic), None, [("POST", "/_matrix/client/v3/keys/query")]),
        ep!("keys", "^/_matrix/client/(r0|v3|unstable)/keys/changes$", Any, Kind(Generic), None, [("GET", "/_matrix/client/v3/keys/changes")]),
        ep!("keys", "^/_matrix/client/(r0|v3|unstable)/keys/claim$", Any, Kind(Generic), None, [("POST", "/_matrix/client/v3/keys/claim")]),
        ep!("keys", "^/_matrix/client/(r0|v3|unstable)/room_keys/", Any, Kind(Generic), None, [("GET", "/_matrix/client/v3/room_keys/version")]),
        // --- login and registration
        ep!("login", "^/_matrix/client/(api/v1|r0|v3|unstable)/login$", Any, Kind(Generic), None, [("POST", "/_matrix/client/v3/login"), ("GET", "/_matrix/client/v3/login")]),
        ep!("login", "^/_matrix/client/(r0|v3|unstable)/register$", Any, Kind(Generic), None, [("POST", "/_matrix/client/v3/register")]),
        ep!("login", "^/_matrix/client/(r0|v3|unstable)/register/available$", Any, Kind(Generic), None, [("GET", "/_matrix/client/v3/register/available")]),
        ep!("login", "^/_matrix/client/(r0|v3|unstable)/password_policy$", Any, Kind(Generic), None, [("GET", "/_matrix/client/v3/password_policy")]),
        // --- antivirus: every download and thumbnail goes through the content scanner, which
        // fetches from the media workers and passes on only what clamd found clean (seed 004
        // issue 2.10: the seed deployed a scanner that nothing routed to).
        ep!(av "media-scan", "^/_matrix/client/v1/media/(download|thumbnail)/", ReadOnly, None, [("GET", "/_matrix/client/v1/media/download/d/abc"), ("GET", "/_matrix/client/v1/media/thumbnail/d/abc")]),
        ep!(av "media-scan", "^/_matrix/media/(v3|r0)/(download|thumbnail)/", ReadOnly, None, [("GET", "/_matrix/media/v3/download/d/abc"), ("GET", "/_matrix/media/r0/thumbnail/d/abc")]),
        ep!(av "media-scan", "^/_matrix/media_proxy/unstable/", Any, None, [("GET", "/_matrix/media_proxy/unstable/public_key"), ("POST", "/_matrix/media_proxy/unstable/scan_encrypted")]),
        // --- media (authenticated media and legacy paths, uploads included)
        ep!("media", "^/_matrix/media/", Any, Kind(MediaRepository), None, [("POST", "/_matrix/media/v3/upload"), ("GET", "/_matrix/media/v3/config"), ("GET", "/_matrix/media/v3/download/d/abc")]),
        ep!("media", "^/_matrix/client/v1/media/", Any, Kind(MediaRepository), None, [("GET", "/_matrix/client/v1/media/download/d/abc"), ("GET", "/_matrix/client/v1/media/thumbnail/d/abc")]),
        ep!("media-admin", "^/_synapse/admin/v1/(purge_media_cache|room/[^/]+/media|user/[^/]+/media|media/|quarantine_media/|users/[^/]+/media)", Any, Kind(MediaRepository), None, [("POST", "/_synapse/admin/v1/purge_media_cache")]),
        Endpoint { family: "media-scan", regex: "^/_matrix/federation/v1/media/(download|thumbnail)/", methods: Methods::ReadOnly,
                   target: Target::ContentScanner, sticky: Sticky::None,
                   examples: &[("GET", "/_matrix/federation/v1/media/download/abc")], federation: true, antivirus: true },
        ep!(fed "media-federation", "^/_matrix/federation/v1/media/", Kind(MediaRepository), None, [("GET", "/_matrix/federation/v1/media/download/abc"), ("GET", "/_matrix/federation/v1/media/thumbnail/abc")]),
        // --- federation inbound
        ep!(fed "federation-send", "^/_matrix/federation/v1/send/", Kind(Generic), Source, [("PUT", "/_matrix/federation/v1/send/txn1")]),
        ep!(fed "federation", "^/_matrix/federation/v1/(event|state|state_ids|backfill|get_missing_events|event_auth|timestamp_to_event|exchange_third_party_invite|user/devices|hierarchy)/", Kind(Generic), None, [("GET", "/_matrix/federation/v1/event/$e"), ("GET", "/_matrix/federation/v1/state_ids/!r:d")]),
        ep!(fed "federation", "^/_matrix/federation/v1/(publicRooms|query/|make_join/|make_leave/|make_knock/|send_knock/)", Kind(Generic), None, [("GET", "/_matrix/federation/v1/query/profile"), ("GET", "/_matrix/federation/v1/make_join/!r:d/@u:d")]),
        ep!(fed "federation", "^/_matrix/federation/(v1|v2)/(send_join|send_leave|invite)/", Kind(Generic), None, [("PUT", "/_matrix/federation/v2/send_join/!r:d/$e")]),
        ep!(fed "federation", "^/_matrix/key/v2/query", Kind(Generic), None, [("POST", "/_matrix/key/v2/query")]),
    ]
}

/// The router backend (and route group) of the content scanner. It has no fallback to main:
/// when the scanner is down, downloads fail closed.
pub const CONTENT_SCANNER_BACKEND: &str = "content-scanner";

/// A row resolved against a topology: the worker group (or main) that gets it.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub endpoint: Endpoint,
    /// Group name, or `main`.
    pub group: String,
    /// HAProxy backend name.
    pub backend: String,
}

/// Resolves every applicable row to a backend. A row whose worker type does not exist goes to main.
pub fn routes(topology: &Topology) -> Vec<Route> {
    let federation = topology.has(mxstack_spec::Feature::Federation);
    let antivirus = topology.has(mxstack_spec::Feature::Antivirus);
    endpoint_table()
        .into_iter()
        .filter(|e| federation || !e.federation)
        .filter(|e| antivirus || !e.antivirus)
        .map(|e| {
            if e.target == Target::ContentScanner {
                return Route {
                    group: CONTENT_SCANNER_BACKEND.into(),
                    backend: CONTENT_SCANNER_BACKEND.into(),
                    endpoint: e,
                };
            }
            let group = target_group(&topology.groups, e.target);
            let backend = match &group {
                Some(g) => format!("{}{}", g.name, e.sticky.suffix()),
                None => "main".to_string(),
            };
            Route {
                group: group
                    .map(|g| g.name.clone())
                    .unwrap_or_else(|| "main".into()),
                backend,
                endpoint: e,
            }
        })
        .collect()
}

pub fn target_group(groups: &[WorkerGroup], target: Target) -> Option<&WorkerGroup> {
    match target {
        Target::Main | Target::ContentScanner => None,
        Target::Kind(k) => groups.iter().find(|g| g.kind == k),
        Target::StreamWriter(s) => groups
            .iter()
            .find(|g| g.kind == WorkerKind::StreamWriter && g.streams.contains(&s)),
    }
}

/// The route the router picks for a request, as HAProxy does: read-only rows first for GET and
/// HEAD (the read-only map), then the others, each in table order.
pub fn pick<'a>(routes: &'a [Route], method: &str, path: &str) -> Option<&'a Route> {
    let read = matches!(method, "GET" | "HEAD");
    let matches = |r: &&Route| {
        regex::Regex::new(r.endpoint.regex)
            .map(|re| re.is_match(path))
            .unwrap_or(false)
    };
    routes
        .iter()
        .filter(|r| read && r.endpoint.methods == Methods::ReadOnly)
        .find(matches)
        .or_else(|| {
            routes
                .iter()
                .filter(|r| r.endpoint.methods == Methods::Any)
                .find(matches)
        })
}

/// The backends the routes need: (backend name, group name, stickiness), sorted, deduplicated.
pub fn backends(routes: &[Route]) -> Vec<(String, String, Sticky)> {
    let mut out: Vec<(String, String, Sticky)> = routes
        .iter()
        .filter(|r| r.group != "main" && r.endpoint.target != Target::ContentScanner)
        .map(|r| (r.backend.clone(), r.group.clone(), r.endpoint.sticky))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxstack_spec::{Config, Feature, Tier};
    use regex::Regex;

    /// The row HAProxy picks for a request: read-only rows first for GET/HEAD (the read-only
    /// map), then the others, each in table order.
    pub(crate) fn router_pick(table: &[Endpoint], method: &str, path: &str) -> Option<usize> {
        let read = matches!(method, "GET" | "HEAD");
        let matches = |e: &Endpoint| Regex::new(e.regex).expect("valid regex").is_match(path);
        table
            .iter()
            .position(|e| read && e.methods == Methods::ReadOnly && matches(e))
            .or_else(|| {
                table
                    .iter()
                    .position(|e| e.methods == Methods::Any && matches(e))
            })
    }

    #[test]
    fn every_example_is_routed_by_its_own_row() {
        for antivirus in [false, true] {
            let table: Vec<Endpoint> = endpoint_table()
                .into_iter()
                .filter(|e| antivirus || !e.antivirus)
                .collect();
            for (i, e) in table.iter().enumerate() {
                assert!(!e.examples.is_empty(), "{} has no example", e.regex);
                for (method, path) in e.examples {
                    let first = router_pick(&table, method, path);
                    // With antivirus on, the scanner rows take media downloads on purpose.
                    let shadowed_by_scanner = antivirus
                        && e.target == Target::Kind(MediaRepository)
                        && first.is_some_and(|f| table[f].target == Target::ContentScanner);
                    assert!(
                        first == Some(i) || shadowed_by_scanner,
                        "{method} {path} should be routed by `{}` but row {first:?} matches first (antivirus {antivirus})",
                        e.regex
                    );
                }
            }
        }
    }

    #[test]
    fn downloads_go_through_the_scanner_only_with_antivirus() {
        let with = Topology::build(&Config::new(
            "acme.test",
            Tier::T1k,
            [Feature::Antivirus].into_iter().collect(),
        ));
        let without = Topology::build(&Config::new("acme.test", Tier::T1k, Default::default()));
        for (t, want) in [(&with, CONTENT_SCANNER_BACKEND), (&without, "media")] {
            let table: Vec<Endpoint> = routes(t).into_iter().map(|r| r.endpoint).collect();
            let backends: Vec<String> = routes(t).into_iter().map(|r| r.backend).collect();
            for path in [
                "/_matrix/client/v1/media/download/acme.test/abc",
                "/_matrix/client/v1/media/thumbnail/acme.test/abc",
                "/_matrix/media/v3/download/acme.test/abc",
                "/_matrix/media/r0/thumbnail/acme.test/abc",
            ] {
                let i = router_pick(&table, "GET", path).expect("routed");
                assert_eq!(backends[i], want, "GET {path}");
            }
            // Uploads never go to the scanner: the media worker's module scans them.
            let i = router_pick(&table, "POST", "/_matrix/media/v3/upload").unwrap();
            assert_eq!(backends[i], "media");
        }
    }

    #[test]
    fn missing_worker_types_fall_back_to_main_and_federation_rows_follow_the_feature() {
        let t = Topology::build(&Config::new(
            "acme.test",
            Tier::T1k,
            [Feature::Li].into_iter().collect(),
        ));
        let r = routes(&t);
        assert!(
            r.iter().all(|r| !r.endpoint.federation),
            "federation rows without federation"
        );
        let sync = r.iter().find(|r| r.endpoint.family == "sync").unwrap();
        assert_eq!(sync.backend, "synchrotron-by-user");
        let typing = r.iter().find(|r| r.endpoint.family == "typing").unwrap();
        assert_eq!(typing.group, "stream-writer");
        let big = Topology::build(&Config::new(
            "acme.test",
            Tier::T20k,
            Feature::ALL.into_iter().collect(),
        ));
        let typing = routes(&big)
            .into_iter()
            .find(|r| r.endpoint.family == "typing")
            .unwrap();
        assert_eq!(typing.group, "stream-typing");
        assert!(routes(&big)
            .iter()
            .any(|r| r.endpoint.family == "federation-send" && r.backend == "generic-by-source"));
    }
}
