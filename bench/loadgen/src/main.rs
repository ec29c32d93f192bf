//! Load generator for `bench/scanner.py`, in Rust so that the client costs little of the two
//! cores it shares with the servers it measures (the Python client it replaces spent about as
//! much CPU per request as the scanner under test).
//!
//! ```text
//! mxstack-bench-load http  --url http://127.0.0.1:8080/.../{id} --ids PREFIX|--same ID \
//!                          --requests N --concurrency C --expect-len BYTES [--header 'K: V']
//! mxstack-bench-load clamd --addr 127.0.0.1:3310 --file F --requests N --concurrency C
//! ```
//!
//! `http`: `{id}` in the URL becomes `PREFIX-<k>` (a new media ID per request: uncached) or the
//! same ID every time (cached). Every response must be 200 with exactly `--expect-len` bytes,
//! else it counts as an error. `clamd`: each of the C tasks keeps one `zIDSESSION` and sends the
//! file with `zINSTREAM` in 64 KiB frames, the best case for clamd itself (the ceiling).
//! Output: one JSON object `{requests, errors, rps, mb_s, p50_ms, p99_ms}` on stdout.

use std::cell::{Cell, RefCell};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Args {
    mode: String,
    url: String,
    ids: Option<String>,
    same: Option<String>,
    addr: String,
    file: String,
    requests: usize,
    concurrency: usize,
    expect_len: usize,
    headers: Vec<(String, String)>,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it
        .next()
        .ok_or("usage: mxstack-bench-load http|clamd ... (see the source's header)")?;
    let mut a = Args {
        mode,
        url: String::new(),
        ids: None,
        same: None,
        addr: String::new(),
        file: String::new(),
        requests: 100,
        concurrency: 1,
        expect_len: 0,
        headers: Vec::new(),
    };
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let num = || {
            v.parse::<usize>()
                .map_err(|_| format!("{k}: `{v}` is not a number"))
        };
        match k.as_str() {
            "--url" => a.url = v.clone(),
            "--ids" => a.ids = Some(v.clone()),
            "--same" => a.same = Some(v.clone()),
            "--addr" => a.addr = v.clone(),
            "--file" => a.file = v.clone(),
            "--requests" => a.requests = num()?,
            "--concurrency" => a.concurrency = num()?.max(1),
            "--expect-len" => a.expect_len = num()?,
            "--header" => {
                let (n, val) = v
                    .split_once(':')
                    .ok_or(format!("--header `{v}`: expected `Name: value`"))?;
                a.headers
                    .push((n.trim().to_string(), val.trim().to_string()));
            }
            _ => return Err(format!("unknown option `{k}`")),
        }
    }
    Ok(a)
}

/// Latencies in seconds plus the error count and bytes moved, shared by the tasks of one run.
#[derive(Default)]
struct Tally {
    latencies: RefCell<Vec<f64>>,
    errors: Cell<usize>,
    bytes: Cell<usize>,
    next: Cell<usize>,
}

impl Tally {
    /// The next request index, or None when all are taken.
    fn take(&self, total: usize) -> Option<usize> {
        let k = self.next.get();
        (k < total).then(|| {
            self.next.set(k + 1);
            k
        })
    }
}

async fn http_task(a: Rc<Args>, client: reqwest::Client, tally: Rc<Tally>) {
    while let Some(k) = tally.take(a.requests) {
        let id = match (&a.same, &a.ids) {
            (Some(same), _) => same.clone(),
            (None, Some(prefix)) => format!("{prefix}-{k}"),
            (None, None) => k.to_string(),
        };
        let mut req = client.get(a.url.replace("{id}", &id));
        for (n, v) in &a.headers {
            req = req.header(n, v);
        }
        let t = Instant::now();
        let ok = match req.send().await {
            Ok(r) => {
                let status = r.status();
                match r.bytes().await {
                    Ok(b) => {
                        tally.bytes.set(tally.bytes.get() + b.len());
                        status == reqwest::StatusCode::OK && b.len() == a.expect_len
                    }
                    Err(_) => false,
                }
            }
            Err(_) => false,
        };
        tally.latencies.borrow_mut().push(t.elapsed().as_secs_f64());
        if !ok {
            tally.errors.set(tally.errors.get() + 1);
        }
    }
}

async fn clamd_task(a: Rc<Args>, data: Rc<Vec<u8>>, tally: Rc<Tally>) -> std::io::Result<()> {
    let mut s = tokio::net::TcpStream::connect(&a.addr).await?;
    s.set_nodelay(true)?;
    s.write_all(b"zIDSESSION\0").await?;
    let mut frame = Vec::with_capacity(64 * 1024 + 4);
    let mut reply = Vec::new();
    let mut id = 0u64;
    while let Some(_k) = tally.take(a.requests) {
        id += 1;
        let t = Instant::now();
        s.write_all(b"zINSTREAM\0").await?;
        for piece in data.chunks(64 * 1024) {
            frame.clear();
            frame.extend_from_slice(&(piece.len() as u32).to_be_bytes());
            frame.extend_from_slice(piece);
            s.write_all(&frame).await?;
        }
        s.write_all(&[0, 0, 0, 0]).await?;
        reply.clear();
        let mut buf = [0u8; 256];
        while !reply.contains(&0) {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::other("clamd closed the session"));
            }
            reply.extend_from_slice(&buf[..n]);
        }
        tally.latencies.borrow_mut().push(t.elapsed().as_secs_f64());
        tally.bytes.set(tally.bytes.get() + data.len());
        if reply != format!("{id}: stream: OK\0").as_bytes() {
            tally.errors.set(tally.errors.get() + 1);
        }
    }
    s.write_all(b"zEND\0").await
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => Rc::new(a),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // One thread: the generator should take as little CPU from the measured servers as it can.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tally = Rc::new(Tally::default());
    let started = Instant::now();
    let outcome: Result<(), String> = rt.block_on(async {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let mut tasks = Vec::new();
                match a.mode.as_str() {
                    "http" => {
                        let client = reqwest::Client::builder()
                            .pool_max_idle_per_host(a.concurrency)
                            .build()
                            .map_err(|e| e.to_string())?;
                        for _ in 0..a.concurrency {
                            tasks.push(tokio::task::spawn_local(http_task(
                                a.clone(),
                                client.clone(),
                                tally.clone(),
                            )));
                        }
                        for t in tasks {
                            t.await.map_err(|e| e.to_string())?;
                        }
                    }
                    "clamd" => {
                        let data = Rc::new(
                            std::fs::read(&a.file).map_err(|e| format!("{}: {e}", a.file))?,
                        );
                        let mut clamd_tasks = Vec::new();
                        for _ in 0..a.concurrency {
                            clamd_tasks.push(tokio::task::spawn_local(clamd_task(
                                a.clone(),
                                data.clone(),
                                tally.clone(),
                            )));
                        }
                        for t in clamd_tasks {
                            t.await
                                .map_err(|e| e.to_string())?
                                .map_err(|e| format!("clamd {}: {e}", a.addr))?;
                        }
                    }
                    other => return Err(format!("unknown mode `{other}`: http or clamd")),
                }
                Ok(())
            })
            .await
    });
    if let Err(e) = outcome {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let wall = started.elapsed().as_secs_f64();
    let mut lat = tally.latencies.take();
    lat.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .map(|s| (s * 1e5).round() / 100.0)
            .unwrap_or(0.0)
    };
    let out = serde_json::json!({
        "requests": lat.len(),
        "errors": tally.errors.get(),
        "rps": (lat.len() as f64 / wall * 100.0).round() / 100.0,
        "mb_s": (tally.bytes.get() as f64 / wall / 1e6 * 10.0).round() / 10.0,
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
    });
    println!("{out}");
    ExitCode::SUCCESS
}
