//! Prometheus metrics in the text exposition format (a few counters: not worth a dependency).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Metrics {
    pub issued_legacy: AtomicU64,
    pub issued: AtomicU64,
    pub bad_request: AtomicU64,
    pub foreign_server: AtomicU64,
    pub unauthorized: AtomicU64,
    pub homeserver_errors: AtomicU64,
    pub rooms_created: AtomicU64,
    pub room_errors: AtomicU64,
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut o = String::new();
        let family = |o: &mut String, name: &str, help: &str, rows: &[(&str, &AtomicU64)]| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in rows {
                let _ = writeln!(o, "{name}{labels} {}", v.load(Relaxed));
            }
        };
        family(
            &mut o,
            "mxstack_rtc_auth_tokens_issued_total",
            "LiveKit tokens handed out, by endpoint.",
            &[
                ("{endpoint=\"sfu_get\"}", &self.issued_legacy),
                ("{endpoint=\"get_token\"}", &self.issued),
            ],
        );
        family(
            &mut o,
            "mxstack_rtc_auth_refused_total",
            "Requests refused, by reason.",
            &[
                ("{reason=\"bad_request\"}", &self.bad_request),
                ("{reason=\"foreign_server\"}", &self.foreign_server),
                ("{reason=\"unauthorized\"}", &self.unauthorized),
            ],
        );
        family(
            &mut o,
            "mxstack_rtc_auth_homeserver_errors_total",
            "OpenID checks that failed because the homeserver could not be asked.",
            &[("", &self.homeserver_errors)],
        );
        family(
            &mut o,
            "mxstack_rtc_auth_rooms_created_total",
            "CreateRoom calls LiveKit answered (created or already there).",
            &[("", &self.rooms_created)],
        );
        family(
            &mut o,
            "mxstack_rtc_auth_room_errors_total",
            "CreateRoom calls that failed (no token was handed out).",
            &[("", &self.room_errors)],
        );
        o
    }
}
