//! The traffic model: rates per CCU at the tier's peak (the seed's sizing) or from a profile
//! file, and the parsing of the command line's durations, rates and percentages.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::LoadError;

/// One class of room sizes in the mix: `share` of the rooms have between `min` and `max`
/// members (inclusive; capped at the number of users).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomClass {
    pub share: f64,
    pub min: usize,
    pub max: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Exponential gaps: bursts and lulls as independent users make them.
    Poisson,
    /// Evenly spaced sends (bench/delivery.py's schedule).
    Fixed,
}

/// Per-CCU rates at peak. A profile file has these fields, every one optional (missing ones
/// keep the seed's value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Profile {
    /// Seed 003: 100 CCU → 140–400 messages/min; the peak end, 4 per CCU.
    pub messages_per_min_per_ccu: f64,
    /// Seed 003: 10–20 uploads/hour per 100 CCU; the peak end.
    pub uploads_per_hour_per_ccu: f64,
    /// Not in the seed: one typing notification per two messages.
    pub typing_per_min_per_ccu: f64,
    /// Not in the seed: one read receipt per two messages.
    pub receipts_per_min_per_ccu: f64,
    /// Seed 003: 50–100 active rooms per 100 CCU; the middle.
    pub rooms_per_ccu: f64,
    pub room_mix: Vec<RoomClass>,
    /// A room's share of the traffic grows as members^exponent: 1 means every member is as
    /// active in an all-hands room as in a direct chat; 0 means every room is equally busy.
    /// Not in the seed: 0.5, large rooms busier than small ones but far less per member
    /// (participation inequality: most members of a large room read, few write).
    pub room_activity_exponent: f64,
    pub upload_bytes: usize,
    pub arrival: Arrival,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            messages_per_min_per_ccu: 4.0,
            uploads_per_hour_per_ccu: 0.2,
            typing_per_min_per_ccu: 2.0,
            receipts_per_min_per_ccu: 2.0,
            rooms_per_ccu: 0.75,
            // Many direct and small rooms, some team rooms, a few large ones (all-hands).
            room_mix: vec![
                RoomClass {
                    share: 0.60,
                    min: 2,
                    max: 2,
                },
                RoomClass {
                    share: 0.25,
                    min: 3,
                    max: 8,
                },
                RoomClass {
                    share: 0.12,
                    min: 9,
                    max: 30,
                },
                RoomClass {
                    share: 0.03,
                    min: 31,
                    max: 300,
                },
            ],
            room_activity_exponent: 0.5,
            upload_bytes: 32 * 1024,
            arrival: Arrival::Poisson,
        }
    }
}

/// Absolute rates for a given CCU: what the generator aims at.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rates {
    pub messages_per_min: f64,
    pub uploads_per_hour: f64,
    pub typing_per_min: f64,
    pub receipts_per_min: f64,
    pub rooms: usize,
}

impl Profile {
    /// `seed` or a YAML/JSON file (JSON is YAML).
    pub fn load(spec: &str) -> Result<Profile, LoadError> {
        if spec == "seed" {
            return Ok(Profile::default());
        }
        let text = std::fs::read_to_string(spec)
            .map_err(|e| LoadError::BadInput(format!("--profile {spec}: {e}")))?;
        let p: Profile = serde_saphyr::from_str(&text)
            .map_err(|e| LoadError::BadInput(format!("--profile {spec}: {e}")))?;
        p.validate()
            .map_err(|e| LoadError::BadInput(format!("--profile {spec}: {e}")))?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            self.messages_per_min_per_ccu,
            self.uploads_per_hour_per_ccu,
            self.typing_per_min_per_ccu,
            self.receipts_per_min_per_ccu,
            self.rooms_per_ccu,
        ];
        if rates.iter().any(|r| !r.is_finite() || *r < 0.0) {
            return Err("rates must be finite and not negative".into());
        }
        if self.room_mix.is_empty() || self.room_mix.iter().any(|c| c.share <= 0.0) {
            return Err("room_mix needs at least one class, each with a share > 0".into());
        }
        if !(0.0..=2.0).contains(&self.room_activity_exponent) {
            return Err("room_activity_exponent must be between 0 and 2".into());
        }
        if self.room_mix.iter().any(|c| c.min < 2 || c.max < c.min) {
            return Err("room_mix: every class needs 2 <= min <= max".into());
        }
        Ok(())
    }

    /// The tier's peak for `ccu` users; `rate` (messages/min) overrides the message rate, and
    /// typing, receipts and uploads keep their ratio to it (the profile's shape at that rate).
    /// A profile without messages has no ratio: its other rates stay.
    pub fn rates(&self, ccu: usize, rate: Option<f64>) -> Rates {
        let n = ccu as f64;
        let peak = self.messages_per_min_per_ccu * n;
        let scale = match rate {
            Some(r) if peak > 0.0 => r / peak,
            _ => 1.0,
        };
        Rates {
            messages_per_min: rate.unwrap_or(peak),
            uploads_per_hour: self.uploads_per_hour_per_ccu * n * scale,
            typing_per_min: self.typing_per_min_per_ccu * n * scale,
            receipts_per_min: self.receipts_per_min_per_ccu * n * scale,
            rooms: ((self.rooms_per_ccu * n).round() as usize).max(1),
        }
    }
}

/// `60s`, `2m`, `500ms`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, LoadError> {
    let bad = || LoadError::BadInput(format!("`{s}` is not a duration (e.g. 60s, 2m, 500ms)"));
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `0.1%` or a fraction `0.001`.
pub fn parse_fraction(s: &str) -> Result<f64, LoadError> {
    let bad = || LoadError::BadInput(format!("`{s}` is not an error rate (e.g. 0.1% or 0.001)"));
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => t.parse::<f64>().map_err(|_| bad())?,
    };
    if !(0.0..=1.0).contains(&v) {
        return Err(bad());
    }
    Ok(v)
}
