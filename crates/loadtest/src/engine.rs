//! The load: a /sync long-poll per user, open-loop senders (messages, typing, receipts,
//! uploads), delivery tracking by sequence number, the generator's own lag and CPU time.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::matrix::{escape, Api};
use crate::mix::{self, Kind, Stream};
use crate::profile::Arrival;
use crate::setup::{Room, User};
use crate::stats::{Counts, Latency};

/// Long-poll timeout asked of the server, and the client's bound on one sync (a sync that
/// takes longer is a timeout).
const SYNC_SERVER_MS: u64 = 30_000;
const SYNC_CLIENT: Duration = Duration::from_secs(45);
/// A send or another request that takes longer counts as a timeout.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// Open loop, but bounded: beyond this many sends in flight the generator stops adding more
/// (counted as not sent) instead of growing without limit when the server stalls.
pub const MAX_IN_FLIGHT: usize = 2000;
static UPLOAD: [u8; 256 * 1024] = [0x5a; 256 * 1024];

/// Like bench/delivery.py's: timelines and lazy members; typing and receipts are kept because
/// real clients receive them (the server's fan-out of them is part of the load).
pub fn sync_filter() -> String {
    json!({
        "room": {"timeline": {"limit": 100}, "state": {"lazy_load_members": true},
                 "ephemeral": {"types": ["m.typing", "m.receipt"]}, "account_data": {"types": []}},
        "presence": {"types": []}, "account_data": {"types": []},
    })
    .to_string()
}

/// One message in flight: who must still see it.
struct Msg {
    step: usize,
    expected: u32,
    got: u32,
    acked: Option<Instant>,
    /// Deliveries seen before the send returned: 0 ms each once it does.
    early: u32,
}

/// One step's figures.
#[derive(Default)]
pub struct StepStats {
    pub target_per_min: f64,
    pub attempted: u64,
    pub not_sent_backlog: u64,
    pub acknowledged: u64,
    pub deliveries: u64,
    pub send: Counts,
    pub sync: Counts,
    pub upload: Counts,
    pub typing: Counts,
    pub receipt: Counts,
    pub send_latency: Latency,
    /// How long a send took to fail (429, 5xx, timeout, other): an overloaded server should
    /// refuse fast rather than let clients wait.
    pub refusal_latency: Latency,
    pub delivery_latency: Latency,
    /// (seconds from the step's start to the send's acknowledgement, delivery latency in ms) of
    /// every delivery: when the latency came back under the SLO after a spike.
    pub timeline: Vec<(f32, f32)>,
    pub started: Option<Instant>,
    pub lag: Latency,
    pub sync_gaps: u64,
    pub never_delivered: u64,
    pub missing_deliveries: u64,
    pub load_seconds: f64,
    pub cpu_seconds: f64,
}

pub struct Engine {
    pub api: Api,
    pub tag: String,
    pub users: Vec<User>,
    pub rooms: Vec<Room>,
    /// Rooms of each user.
    pub user_rooms: Vec<Vec<usize>>,
    /// Cumulative traffic weights of the rooms (mix::weights): which room a request goes to.
    cumulative: Vec<f64>,
    pub last_event: RefCell<Vec<Option<String>>>,
    pub steps: RefCell<Vec<StepStats>>,
    msgs: RefCell<HashMap<u64, Msg>>,
    seq: Cell<u64>,
    pub in_flight: Cell<usize>,
    pub syncs_open: Cell<usize>,
    pub upload_bytes: usize,
    filter: String,
    /// One random stream per kind of request (mix::Stream::Pick): tasks of one kind are spawned
    /// and first polled in order, so each kind's picks follow the seed whatever the timing.
    picks: RefCell<[fastrand::Rng; 4]>,
}

impl Engine {
    pub fn new(
        api: Api,
        tag: String,
        users: Vec<User>,
        rooms: Vec<Room>,
        weights: &[f64],
        upload_bytes: usize,
        seed: u64,
    ) -> Engine {
        let cumulative = weights
            .iter()
            .scan(0.0, |acc, w| {
                *acc += w;
                Some(*acc)
            })
            .collect();
        let mut user_rooms = vec![Vec::new(); users.len()];
        for (k, r) in rooms.iter().enumerate() {
            for &m in &r.members {
                user_rooms[m].push(k);
            }
        }
        let n = rooms.len();
        Engine {
            api,
            tag,
            users,
            rooms,
            user_rooms,
            cumulative,
            last_event: RefCell::new(vec![None; n]),
            steps: RefCell::new(Vec::new()),
            msgs: RefCell::new(HashMap::new()),
            seq: Cell::new(0),
            in_flight: Cell::new(0),
            syncs_open: Cell::new(0),
            upload_bytes: upload_bytes.min(UPLOAD.len()),
            filter: escape(&sync_filter()),
            picks: RefCell::new(Kind::ALL.map(|k| mix::rng(seed, Stream::Pick(k).id()))),
        }
    }

    fn step(&self) -> usize {
        self.steps.borrow().len() - 1
    }

    fn with_step<R>(&self, f: impl FnOnce(&mut StepStats) -> R) -> R {
        let mut s = self.steps.borrow_mut();
        let last = s.last_mut().expect("a step is running");
        f(last)
    }

    /// A room by its traffic weight, and a random member of it.
    fn pick(&self, kind: Kind) -> Option<(usize, usize)> {
        let mut picks = self.picks.borrow_mut();
        let rng = &mut picks[kind as usize];
        let total = *self.cumulative.last()?;
        let x = rng.f64() * total;
        let r = self
            .cumulative
            .partition_point(|&c| c <= x)
            .min(self.rooms.len() - 1);
        let members = &self.rooms[r].members;
        (!members.is_empty()).then(|| (members[rng.usize(..members.len())], r))
    }

    /// The first sync: its `next_batch` is where the long-poll starts (setup, not measured).
    pub async fn initial_sync(self: Rc<Self>, u: usize) -> Result<String, crate::matrix::Failure> {
        let path = format!("/_matrix/client/v3/sync?timeout=0&filter={}", self.filter);
        let v = self
            .api
            .get(&path, Some(&self.users[u].token), SYNC_CLIENT)
            .await?;
        Ok(v["next_batch"].as_str().unwrap_or_default().to_string())
    }

    /// User `u`'s long-poll, until the task is aborted.
    pub async fn sync_loop(self: Rc<Self>, u: usize, mut since: String) {
        let token = self.users[u].token.clone();
        loop {
            let path = format!(
                "/_matrix/client/v3/sync?timeout={SYNC_SERVER_MS}&filter={}&since={}",
                self.filter,
                escape(&since)
            );
            self.syncs_open.set(self.syncs_open.get() + 1);
            let r = self.api.get(&path, Some(&token), SYNC_CLIENT).await;
            self.syncs_open.set(self.syncs_open.get() - 1);
            let now = Instant::now();
            match r {
                Ok(v) => {
                    self.with_step(|s| s.sync.ok());
                    if let Some(nb) = v["next_batch"].as_str() {
                        since = nb.to_string();
                    }
                    self.deliver(u, &v, now);
                }
                Err(e) => {
                    self.with_step(|s| s.sync.fail(e.class));
                    // A failing server is not hammered by a tight retry loop.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Every event of this run's in a sync response, other than the user's own.
    fn deliver(&self, u: usize, v: &Value, now: Instant) {
        let Some(joined) = v["rooms"]["join"].as_object() else {
            return;
        };
        let prefix = format!("{} ", self.tag);
        for room in joined.values() {
            if room["timeline"]["limited"].as_bool() == Some(true) {
                self.with_step(|s| s.sync_gaps += 1);
            }
            let Some(events) = room["timeline"]["events"].as_array() else {
                continue;
            };
            for ev in events {
                if ev["sender"].as_str() == Some(self.users[u].id.as_str()) {
                    continue;
                }
                let Some(seq) = ev["content"]["body"]
                    .as_str()
                    .and_then(|b| b.strip_prefix(&prefix))
                    .and_then(|s| s.parse::<u64>().ok())
                else {
                    continue;
                };
                self.delivered(seq, now);
            }
        }
    }

    fn delivered(&self, seq: u64, now: Instant) {
        let mut msgs = self.msgs.borrow_mut();
        let Some(m) = msgs.get_mut(&seq) else { return };
        m.got += 1;
        match m.acked {
            Some(at) => {
                let lat = now.saturating_duration_since(at);
                let step = m.step;
                let done = m.got >= m.expected;
                if done {
                    msgs.remove(&seq);
                }
                let mut steps = self.steps.borrow_mut();
                record_delivery(&mut steps[step], at, lat);
            }
            None => m.early += 1,
        }
    }

    /// One message from a random member of a random room of a random user.
    pub async fn send_one(self: Rc<Self>) {
        if self.in_flight.get() >= MAX_IN_FLIGHT {
            self.with_step(|s| s.not_sent_backlog += 1);
            return;
        }
        let Some((u, r)) = self.pick(Kind::Message) else {
            return;
        };
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        let step = self.step();
        let expected = (self.rooms[r].members.len() - 1) as u32;
        // Registered before the send: a sync may show it before the send returns.
        self.msgs.borrow_mut().insert(
            seq,
            Msg {
                step,
                expected,
                got: 0,
                acked: None,
                early: 0,
            },
        );
        self.with_step(|s| s.attempted += 1);
        self.in_flight.set(self.in_flight.get() + 1);
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/mxlt-{}-{seq}",
            escape(&self.rooms[r].id),
            self.tag.replace(' ', "-")
        );
        let body = json!({"msgtype": "m.text", "body": format!("{} {seq}", self.tag)});
        let t0 = Instant::now();
        let res = self
            .api
            .put(&path, &self.users[u].token, body, SEND_TIMEOUT)
            .await;
        let acked = Instant::now();
        self.in_flight.set(self.in_flight.get() - 1);
        let mut steps = self.steps.borrow_mut();
        let s = &mut steps[step];
        match res {
            Ok(v) => {
                s.send.ok();
                s.acknowledged += 1;
                s.send_latency.record(acked - t0);
                if let Some(id) = v["event_id"].as_str() {
                    self.last_event.borrow_mut()[r] = Some(id.to_string());
                }
                let mut msgs = self.msgs.borrow_mut();
                if let Some(m) = msgs.get_mut(&seq) {
                    m.acked = Some(acked);
                    for _ in 0..m.early {
                        record_delivery(s, acked, Duration::ZERO);
                    }
                    if m.got >= m.expected {
                        msgs.remove(&seq);
                    }
                }
            }
            Err(e) => {
                s.send.fail(e.class);
                s.refusal_latency.record(acked - t0);
                // Not acknowledged: not owed to anyone (a timed-out send may still land).
                self.msgs.borrow_mut().remove(&seq);
            }
        }
    }

    pub async fn typing_one(self: Rc<Self>) {
        let Some((u, r)) = self.pick(Kind::Typing) else {
            return;
        };
        let path = format!(
            "/_matrix/client/v3/rooms/{}/typing/{}",
            escape(&self.rooms[r].id),
            escape(&self.users[u].id)
        );
        let res = self
            .api
            .put(
                &path,
                &self.users[u].token,
                json!({"typing": true, "timeout": 5000}),
                SEND_TIMEOUT,
            )
            .await;
        self.with_step(|s| match res {
            Ok(_) => s.typing.ok(),
            Err(e) => s.typing.fail(e.class),
        });
    }

    pub async fn receipt_one(self: Rc<Self>) {
        let Some((u, r)) = self.pick(Kind::Receipt) else {
            return;
        };
        let Some(ev) = self.last_event.borrow()[r].clone() else {
            return;
        };
        let path = format!(
            "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
            escape(&self.rooms[r].id),
            escape(&ev)
        );
        let res = self
            .api
            .post(&path, &self.users[u].token, json!({}), SEND_TIMEOUT)
            .await;
        self.with_step(|s| match res {
            Ok(_) => s.receipt.ok(),
            Err(e) => s.receipt.fail(e.class),
        });
    }

    pub async fn upload_one(self: Rc<Self>) {
        let Some((u, _)) = self.pick(Kind::Upload) else {
            return;
        };
        let body = crate::matrix::Body::Bytes(&UPLOAD[..self.upload_bytes]);
        let res = self
            .api
            .call(
                reqwest::Method::POST,
                "/_matrix/media/v3/upload?filename=mxlt.bin",
                Some(&self.users[u].token),
                Some(body),
                Duration::from_secs(60),
            )
            .await;
        self.with_step(|s| match res {
            Ok(_) => s.upload.ok(),
            Err(e) => s.upload.fail(e.class),
        });
    }

    /// Acknowledged messages of `step` some member has not seen yet.
    pub fn outstanding(&self, step: usize) -> (u64, u64) {
        self.msgs
            .borrow()
            .values()
            .filter(|m| m.step == step && m.acked.is_some())
            .fold((0, 0), |(n, d), m| {
                (n + 1, d + u64::from(m.expected.saturating_sub(m.got)))
            })
    }

    /// After the grace: what is still missing is never delivered; forgotten so the next step
    /// starts clean.
    pub fn close_step(&self, step: usize) {
        let (n, d) = self.outstanding(step);
        self.msgs.borrow_mut().retain(|_, m| m.step != step);
        let mut steps = self.steps.borrow_mut();
        steps[step].never_delivered = n;
        steps[step].missing_deliveries = d;
    }
}

fn record_delivery(s: &mut StepStats, acked: Instant, lat: Duration) {
    s.deliveries += 1;
    s.delivery_latency.record(lat);
    if let Some(start) = s.started {
        let at = acked.saturating_duration_since(start).as_secs_f32();
        s.timeline.push((at, lat.as_secs_f32() * 1000.0));
    }
}

/// Calls `f` at `per_min` per minute until `end`: evenly spaced or with exponential gaps drawn
/// from `rng`. The schedule is kept against the clock (open loop): a late wake-up fires what is
/// due at once.
pub async fn ticker(
    per_min: f64,
    end: Instant,
    arrival: Arrival,
    mut rng: fastrand::Rng,
    mut f: impl FnMut(),
) {
    if per_min <= 0.0 {
        return;
    }
    let mean = 60.0 / per_min;
    let gap = |rng: &mut fastrand::Rng| match arrival {
        Arrival::Fixed => mean,
        Arrival::Poisson => -mean * (1.0 - rng.f64()).ln(),
    };
    let mut due = Instant::now() + Duration::from_secs_f64(gap(&mut rng));
    while due < end {
        tokio::time::sleep_until(due.into()).await;
        f();
        due += Duration::from_secs_f64(gap(&mut rng));
    }
}

/// The event loop's lag: how late a 50 ms sleep wakes up. A busy generator wakes late.
pub async fn lag_monitor(engine: Rc<Engine>) {
    let tick = Duration::from_millis(50);
    loop {
        let t = Instant::now();
        tokio::time::sleep(tick).await;
        let late = t.elapsed().saturating_sub(tick);
        engine.with_step(|s| s.lag.record(late));
    }
}

/// CPU seconds (user + system, all threads) of this process so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
