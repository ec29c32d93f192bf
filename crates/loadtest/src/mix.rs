//! Which users sit in which rooms: `rooms` rooms whose sizes follow the profile's mix, filled
//! from one shuffled cycle of the users so that every user is in at least one room (when the
//! rooms have room for everyone) and the memberships spread evenly.

use crate::profile::RoomClass;

/// Room sizes for `rooms` rooms over `users` users: each class gets its share (largest
/// remainder), sizes spread evenly over [min, max], capped at `users`.
pub fn room_sizes(mix: &[RoomClass], rooms: usize, users: usize) -> Vec<usize> {
    let total: f64 = mix.iter().map(|c| c.share).sum();
    let exact: Vec<f64> = mix.iter().map(|c| c.share / total * rooms as f64).collect();
    let mut counts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut order: Vec<usize> = (0..mix.len()).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .partial_cmp(&(exact[a] - exact[a].floor()))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    let missing = rooms - counts.iter().sum::<usize>();
    for &i in order.iter().take(missing) {
        counts[i] += 1;
    }
    let mut sizes = Vec::with_capacity(rooms);
    for (class, &n) in mix.iter().zip(&counts) {
        for k in 0..n {
            // Evenly over the class's range, so a run is reproducible and its mix documented.
            let span = class.max - class.min;
            let size = class.min + if n > 1 { span * k / (n - 1) } else { 0 };
            sizes.push(size.min(users).max(2.min(users)));
        }
    }
    sizes
}

/// Independent random streams from one `--seed`: the same seed gives the same rooms, members,
/// arrivals and picks, so runs on different days (or before and after a change) compare like
/// with like. `stream` names the use (see `Stream`).
pub fn rng(seed: u64, stream: u64) -> fastrand::Rng {
    // A splitmix64 step over the pair: nearby seeds and streams give unrelated generators.
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    fastrand::Rng::with_seed(z ^ (z >> 31))
}

/// The uses of the seed's random streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Which users sit in which rooms.
    Members,
    /// Which room and sender a request of this kind picks.
    Pick(Kind),
    /// The arrival gaps of a kind in step `usize`.
    Arrivals(Kind, usize),
}

/// The kinds of request the load makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Message = 0,
    Typing = 1,
    Receipt = 2,
    Upload = 3,
}

impl Kind {
    /// Every kind, in discriminant order (an index into per-kind arrays).
    pub const ALL: [Kind; 4] = [Kind::Message, Kind::Typing, Kind::Receipt, Kind::Upload];
}

impl Stream {
    pub fn id(self) -> u64 {
        match self {
            Stream::Members => 1,
            Stream::Pick(k) => 2 + k as u64,
            Stream::Arrivals(k, step) => 16 + 4 * step as u64 + k as u64,
        }
    }
}

/// Members (user indexes) of each room. `rng` shuffles the users once; the rooms then take
/// consecutive users from that cycle, so the members of one room are distinct.
pub fn assign(sizes: &[usize], users: usize, rng: &mut fastrand::Rng) -> Vec<Vec<usize>> {
    let mut cycle: Vec<usize> = (0..users).collect();
    rng.shuffle(&mut cycle);
    let mut next = 0;
    sizes
        .iter()
        .map(|&size| {
            let members = (0..size).map(|k| cycle[(next + k) % users]).collect();
            next = (next + size) % users;
            members
        })
        .collect()
}

/// Each room's weight in the traffic: members^exponent.
pub fn weights(sizes: &[usize], exponent: f64) -> Vec<f64> {
    sizes.iter().map(|&s| (s as f64).powf(exponent)).collect()
}

/// Deliveries per message on average: Σ w·(size−1) / Σ w.
pub fn mean_fanout(sizes: &[usize], exponent: f64) -> f64 {
    let w = weights(sizes, exponent);
    let total: f64 = w.iter().sum();
    let pairs: f64 = w
        .iter()
        .zip(sizes)
        .map(|(w, &s)| w * s.saturating_sub(1) as f64)
        .sum();
    pairs / total.max(f64::MIN_POSITIVE)
}

/// The mix as counts by size, for the report.
pub fn histogram(sizes: &[usize]) -> std::collections::BTreeMap<String, usize> {
    let mut h = std::collections::BTreeMap::new();
    for s in sizes {
        let bucket = match s {
            0..=2 => "2",
            3..=8 => "3-8",
            9..=30 => "9-30",
            31..=100 => "31-100",
            _ => "101+",
        };
        *h.entry(bucket.to_string()).or_insert(0) += 1;
    }
    h
}
