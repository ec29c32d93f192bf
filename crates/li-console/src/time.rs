//! UTC times for the pages: unix milliseconds to `YYYY-MM-DD HH:MM:SS UTC` and back from an HTML
//! `datetime-local` value, with `jiff` and without a time-zone database (the console shows and
//! takes UTC only, so a warrant's window never depends on a browser's zone).

use jiff::fmt::strtime;
use jiff::Timestamp;

pub fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

/// `YYYY-MM-DD HH:MM:SS UTC`. A time outside jiff's range, roughly years -9999 to 9999 (an
/// event's `origin_server_ts` is whatever its sender's server claimed), is shown as the number it
/// is.
pub fn format_ms(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .ok()
        .and_then(|t| strtime::format("%Y-%m-%d %H:%M:%S UTC", t).ok())
        .unwrap_or_else(|| format!("{ms} ms since 1970-01-01 00:00:00 UTC"))
}

/// `YYYY-MM-DDTHH:MM[:SS[.fff]]` (or with a space, or a trailing `Z`), read as UTC. Any other
/// offset or zone is refused rather than ignored: a form gives UTC or nothing.
pub fn parse_utc(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches(['Z', 'z']);
    // Appending `Z` makes jiff read the civil time as UTC; a value that already had an offset
    // or a `[zone]` then fails to parse.
    format!("{s}Z")
        .parse::<Timestamp>()
        .ok()
        .map(Timestamp::as_millisecond)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_known_dates() {
        assert_eq!(format_ms(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(parse_utc("2026-11-23T12:39:37"), Some(1_795_437_577_000));
        assert_eq!(format_ms(1_795_437_577_000), "2026-11-23 12:39:37 UTC");
        assert_eq!(parse_utc("2024-02-29T23:59"), Some(1_709_251_140_000));
        assert_eq!(format_ms(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_ms(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(parse_utc("2024-13-01T00:00"), None);
        assert_eq!(parse_utc("yesterday"), None);
    }

    #[test]
    fn takes_what_browsers_and_people_type() {
        let t = Some(1_795_437_540_000);
        for s in [
            "2026-11-23T12:39",
            "2026-11-23 12:39",
            " 2026-11-23T12:39:00 ",
            "2026-11-23T12:39Z",
            "2026-11-23t12:39:00z",
        ] {
            assert_eq!(parse_utc(s), t, "{s:?}");
        }
        assert_eq!(
            parse_utc("2026-11-23T12:39:37.250"),
            Some(1_795_437_577_250)
        );
    }

    #[test]
    fn refuses_impossible_dates_and_other_zones() {
        for s in [
            "2023-02-29T00:00", // not a leap year
            "2024-02-31T00:00",
            "2024-04-31T00:00",
            "2024-01-01T24:00",
            "2024-01-01T12:60",
            "2024-01-01",
            "2024-01-01T12:00+02:00",
            "2024-01-01T12:00-05:00Z",
            "2024-01-01T12:00[Europe/Berlin]",
            "",
        ] {
            assert_eq!(parse_utc(s), None, "{s:?}");
        }
    }

    #[test]
    fn formats_any_stored_value() {
        // The last millisecond of jiff's range, then beyond it (a federated event can claim
        // any i64).
        assert_eq!(format_ms(253_402_207_200_000), "9999-12-30 22:00:00 UTC");
        assert_eq!(
            format_ms(253_402_207_200_001),
            "253402207200001 ms since 1970-01-01 00:00:00 UTC"
        );
        assert_eq!(
            format_ms(i64::MAX),
            "9223372036854775807 ms since 1970-01-01 00:00:00 UTC"
        );
        assert_eq!(
            format_ms(i64::MIN),
            "-9223372036854775808 ms since 1970-01-01 00:00:00 UTC"
        );
    }
}
