//! UTC times for the pages: unix milliseconds to `YYYY-MM-DD HH:MM:SS UTC` and back from an HTML
//! `datetime-local` value, without a time-zone database (the console shows and takes UTC only, so
//! a warrant's window never depends on a browser's zone).

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86400));
    let s = secs.rem_euclid(86400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `YYYY-MM-DDTHH:MM[:SS]` (or with a space), read as UTC.
pub fn parse_utc(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches('Z');
    let (date, time) = s.split_once(['T', ' '])?;
    let mut dp = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, d) = (dp.next()??, dp.next()??, dp.next()??);
    let mut tp = time.split(':').map(|x| x.parse::<f64>().ok());
    let (h, mi) = (tp.next()?? as i64, tp.next()?? as i64);
    let sec = tp.next().flatten().unwrap_or(0.0);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec >= 61.0 {
        return None;
    }
    Some((days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60) * 1000 + (sec * 1000.0) as i64)
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
}
