//! The pure parts: the tier's profile, the room mix, percentiles and the verdict, the JSON
//! schema, argument errors.

use std::time::Duration;

use mxstack_loadtest::engine::StepStats;
use mxstack_loadtest::mix;
use mxstack_loadtest::profile::{parse_duration, parse_fraction, Profile};
use mxstack_loadtest::report::{Inputs, Report, SetupInfo, SpikeInputs, StepReport};
use mxstack_loadtest::run::{check, connections_needed, Options};
use mxstack_loadtest::setup::Cleanup;
use mxstack_loadtest::stats::{
    judge, recovery_seconds, ErrorClass, GeneratorLoad, Latency, Slo, StepFigures, Verdict,
};
use mxstack_loadtest::LoadError;

#[test]
fn seed_profile_matches_the_tiers_peak() {
    let p = Profile::load("seed").unwrap();
    // Seed 003: 100 CCU → up to 400 messages/min, 50–100 rooms, 10–20 uploads/hour.
    let r = p.rates(100, None);
    assert_eq!(r.messages_per_min, 400.0);
    assert!((50..=100).contains(&r.rooms));
    assert!((10.0..=20.0).contains(&r.uploads_per_hour));
    // 20K CCU → up to 80,000 messages/min.
    assert_eq!(p.rates(20_000, None).messages_per_min, 80_000.0);
    assert_eq!(p.rates(100, Some(1234.0)).messages_per_min, 1234.0);
}

#[test]
fn a_rate_keeps_the_profiles_shape_typing_receipts_and_uploads_scale_with_it() {
    let p = Profile::load("seed").unwrap();
    let peak = p.rates(100, None);
    let low = p.rates(100, Some(20.0));
    // 20 of the peak's 400 messages/min: a twentieth of its typing, receipts and uploads (a
    // ramp or spike from a low --rate otherwise carries the peak's typing with a tenth of its
    // messages).
    assert_eq!(low.messages_per_min, 20.0);
    assert!((low.typing_per_min - peak.typing_per_min / 20.0).abs() < 1e-9);
    assert!((low.receipts_per_min - peak.receipts_per_min / 20.0).abs() < 1e-9);
    assert!((low.uploads_per_hour - peak.uploads_per_hour / 20.0).abs() < 1e-9);
    assert_eq!(
        low.rooms, peak.rooms,
        "the rooms follow the users, not the rate"
    );
    // A profile without messages has no ratio to keep: its other rates stay.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("typing-only.yaml");
    std::fs::write(
        &f,
        "messages_per_min_per_ccu: 0
typing_per_min_per_ccu: 3
",
    )
    .unwrap();
    let t = Profile::load(f.to_str().unwrap())
        .unwrap()
        .rates(100, Some(50.0));
    assert_eq!((t.messages_per_min, t.typing_per_min), (50.0, 300.0));
}

#[test]
fn profile_file_overrides_some_fields_and_refuses_unknown_ones() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.yaml");
    std::fs::write(&f, "messages_per_min_per_ccu: 1.4\narrival: fixed\n").unwrap();
    let p = Profile::load(f.to_str().unwrap()).unwrap();
    assert_eq!(p.messages_per_min_per_ccu, 1.4);
    assert_eq!(
        p.uploads_per_hour_per_ccu,
        Profile::default().uploads_per_hour_per_ccu
    );
    std::fs::write(&f, "{\"messages_per_minute\": 3}").unwrap();
    assert!(matches!(
        Profile::load(f.to_str().unwrap()),
        Err(LoadError::BadInput(_))
    ));
    std::fs::write(&f, "room_mix: [{share: 1, min: 1, max: 1}]").unwrap();
    assert!(Profile::load(f.to_str().unwrap()).is_err());
    assert!(Profile::load("/nonexistent/profile.yaml").is_err());
}

#[test]
fn room_mix_is_many_small_some_large_and_covers_every_user() {
    let p = Profile::default();
    for ccu in [2usize, 20, 100, 1000] {
        let rooms = p.rates(ccu, None).rooms;
        let sizes = mix::room_sizes(&p.room_mix, rooms, ccu);
        assert_eq!(sizes.len(), rooms);
        assert!(sizes.iter().all(|&s| (2.min(ccu)..=ccu).contains(&s)));
        let members = mix::assign(&sizes, ccu, &mut fastrand::Rng::with_seed(7));
        for m in &members {
            let mut d = m.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), m.len(), "members of a room are distinct");
        }
        let mut seen = vec![false; ccu];
        members.iter().flatten().for_each(|&u| seen[u] = true);
        assert!(
            seen.iter().all(|&s| s),
            "every user is in a room (ccu {ccu})"
        );
    }
    let sizes = mix::room_sizes(&p.room_mix, 750, 1000);
    let h = mix::histogram(&sizes);
    assert_eq!(h["2"], 450);
    assert!(h["3-8"] > h["9-30"]);
    assert!(sizes.iter().any(|&s| s > 100));
}

#[test]
fn the_seed_repeats_the_members_arrivals_and_picks_and_a_missing_one_is_drawn() {
    use mix::{Kind, Stream};
    let sizes = mix::room_sizes(&Profile::load("seed").unwrap().room_mix, 75, 100);
    let members = |seed| mix::assign(&sizes, 100, &mut mix::rng(seed, Stream::Members.id()));
    assert_eq!(members(7), members(7));
    assert_ne!(members(7), members(8));
    let draws = |seed, stream: Stream| {
        let mut r = mix::rng(seed, stream.id());
        (0..8).map(|_| r.u64(..)).collect::<Vec<_>>()
    };
    let streams = [
        Stream::Members,
        Stream::Pick(Kind::Message),
        Stream::Pick(Kind::Upload),
        Stream::Arrivals(Kind::Message, 0),
        Stream::Arrivals(Kind::Upload, 0),
        Stream::Arrivals(Kind::Message, 1),
    ];
    for (i, a) in streams.iter().enumerate() {
        assert_eq!(draws(7, *a), draws(7, *a), "{a:?}");
        assert_ne!(draws(7, *a), draws(8, *a), "{a:?}");
        for b in &streams[i + 1..] {
            assert_ne!(a.id(), b.id(), "{a:?} and {b:?} share a stream");
        }
    }
    assert_eq!(
        check(&Options {
            seed: Some(5),
            ..options()
        })
        .unwrap()
        .seed,
        5
    );
    let drawn: std::collections::HashSet<u64> =
        (0..4).map(|_| check(&options()).unwrap().seed).collect();
    assert!(drawn.len() > 1, "without --seed each run draws its own");
}

#[test]
fn percentiles_in_ms() {
    let mut l = Latency::default();
    for ms in 1..=100u64 {
        l.record(Duration::from_millis(ms));
    }
    let s = l.summary();
    assert_eq!(s.count, 100);
    assert!((s.p50.unwrap() - 50.0).abs() < 0.5);
    assert!((s.p99.unwrap() - 99.0).abs() < 0.5);
    assert!((s.max.unwrap() - 100.0).abs() < 0.5);
    assert_eq!(Latency::default().summary().p99, None);
}

fn figures() -> StepFigures {
    StepFigures {
        offered_per_min: 400.0,
        achieved_per_min: 398.0,
        delivery_p99_ms: Some(250.0),
        error_rate: 0.0,
        never_delivered: 0,
        generator: GeneratorLoad::new(0.05, 3.0, 10.0),
    }
}

#[test]
fn verdict() {
    let slo = Slo::default();
    assert_eq!(judge(&figures(), &slo).0, Verdict::Pass);
    let slow = StepFigures {
        delivery_p99_ms: Some(1200.0),
        ..figures()
    };
    assert_eq!(judge(&slow, &slo).0, Verdict::Fail);
    let lost = StepFigures {
        never_delivered: 1,
        ..figures()
    };
    assert_eq!(judge(&lost, &slo).0, Verdict::Fail);
    let errs = StepFigures {
        error_rate: 0.002,
        ..figures()
    };
    assert_eq!(judge(&errs, &slo).0, Verdict::Fail);
    let short = StepFigures {
        achieved_per_min: 300.0,
        ..figures()
    };
    assert_eq!(judge(&short, &slo).0, Verdict::Fail);
    let none = StepFigures {
        delivery_p99_ms: None,
        ..figures()
    };
    assert_eq!(judge(&none, &slo).0, Verdict::Fail);
    // Saturated: the figures are the generator's, not the server's.
    let busy = StepFigures {
        generator: GeneratorLoad::new(0.95, 3.0, 10.0),
        ..slow
    };
    let (v, reasons) = judge(&busy, &slo);
    assert_eq!(v, Verdict::GeneratorLimited);
    assert!(reasons[0].contains("95% of a core"), "{reasons:?}");
    let starved = StepFigures {
        generator: GeneratorLoad::new(0.004, 85.8, 93.0),
        ..figures()
    };
    let (v, reasons) = judge(&starved, &slo);
    assert_eq!(v, Verdict::GeneratorLimited);
    assert!(reasons[0].contains("85.8 ms late"), "{reasons:?}");
    assert!(!GeneratorLoad::new(0.89, 49.0, 200.0).saturated);
    assert_eq!(Verdict::GeneratorLimited.exit_code(), 3);
    assert_eq!(Verdict::Pass.exit_code(), 0);
    assert_eq!(Verdict::Fail.exit_code(), 1);
    assert_eq!(ErrorClass::of_status(429), ErrorClass::RateLimited);
    assert_eq!(ErrorClass::of_status(502), ErrorClass::ServerError);
    assert_eq!(ErrorClass::of_status(403), ErrorClass::Other);
}

fn options() -> Options {
    Options {
        url: "http://127.0.0.1:1".into(),
        ccu: 20,
        duration: "20s".into(),
        profile: "seed".into(),
        rate: None,
        ramp: false,
        ramp_factor: 1.25,
        ramp_steps: 10,
        spike: None,
        spike_duration: "5m".into(),
        recovery: "30s".into(),
        config: Some("/x/mxstack.yaml".into()),
        admin_token: None,
        slo_p99: "1s".into(),
        slo_errors: "0.1%".into(),
        grace: "30s".into(),
        setup_timeout: "10m".into(),
        seed: None,
        json: true,
    }
}

#[test]
fn argument_errors() {
    assert!(check(&options()).is_ok());
    let bad = |o: Options| check(&o).err().map(|e| (e.exit_code(), e.to_string()));
    let (code, msg) = bad(Options {
        url: "127.0.0.1:8008".into(),
        ..options()
    })
    .unwrap();
    assert_eq!(code, 2);
    assert!(msg.contains("--url"));
    assert!(bad(Options {
        ccu: 1,
        ..options()
    })
    .unwrap()
    .1
    .contains("--ccu"));
    let (_, msg) = bad(Options {
        config: None,
        ..options()
    })
    .unwrap();
    assert!(msg.contains("--admin-token") && msg.contains("--config"));
    assert!(bad(Options {
        admin_token: Some("t".into()),
        ..options()
    })
    .is_some());
    assert!(bad(Options {
        duration: "soon".into(),
        ..options()
    })
    .unwrap()
    .1
    .contains("duration"));
    assert!(bad(Options {
        rate: Some(0.0),
        ..options()
    })
    .is_some());
    assert!(bad(Options {
        slo_errors: "5".into(),
        ..options()
    })
    .is_some());
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_fraction("0.1%").unwrap(), 0.001);
    let p = check(&options()).unwrap();
    assert_eq!(p.slo.p99_delivery_ms, 1000.0);
    assert_eq!(connections_needed(20, &p.rates, 1.0), 20 + 64);
}

/// Every key path of a JSON value, in order.
fn paths(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    if let Some(o) = v.as_object() {
        for (k, x) in o {
            let p = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.push(p.clone());
            paths(x, &p, out);
        }
    } else if let Some(a) = v.as_array() {
        if let Some(x) = a.first() {
            paths(x, &format!("{prefix}[]"), out);
        }
    }
}

#[test]
fn json_schema_is_stable() {
    let o = options();
    let plan = check(&o).unwrap();
    let mut s = StepStats {
        target_per_min: 80.0,
        acknowledged: 10,
        load_seconds: 10.0,
        ..Default::default()
    };
    s.delivery_latency.record(Duration::from_millis(20));
    s.send.ok();
    s.sync.fail(ErrorClass::Timeout);
    let step = StepReport::from_stats(&s, &plan.slo);
    let inputs = Inputs {
        url: plan.url.clone(),
        ccu: 20,
        duration_s: 20.0,
        profile: "seed".into(),
        rates: plan.rates,
        room_activity_exponent: 0.5,
        arrival: plan.profile.arrival,
        ramp: false,
        slo: plan.slo,
        grace_s: 30.0,
        spike: None,
        seed: 42,
    };
    let r = Report::new(
        "abc123".into(),
        inputs,
        SetupInfo::default(),
        vec![step],
        false,
        Cleanup::default(),
    );
    let v = serde_json::to_value(&r).unwrap();
    let mut got = Vec::new();
    paths(&v, "", &mut got);
    let top: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        top,
        [
            "schema",
            "run_id",
            "inputs",
            "setup",
            "verdict",
            "reasons",
            "highest_sustained_per_min",
            "acknowledged_but_never_delivered",
            "send_latency_ms",
            "delivery_latency_ms",
            "goodput",
            "requests",
            "error_rate",
            "generator",
            "steps",
            "interrupted",
            "cleanup",
        ]
    );
    for p in [
        "schema",
        "inputs.url",
        "inputs.ccu",
        "inputs.duration_s",
        "inputs.profile",
        "inputs.rates.messages_per_min",
        "inputs.rates.uploads_per_hour",
        "inputs.rates.typing_per_min",
        "inputs.rates.receipts_per_min",
        "inputs.rates.rooms",
        "inputs.room_activity_exponent",
        "inputs.arrival",
        "inputs.ramp",
        "inputs.slo.p99_delivery_ms",
        "inputs.slo.max_error_rate",
        "inputs.grace_s",
        "inputs.seed",
        "setup.users",
        "setup.rooms",
        "setup.room_sizes",
        "setup.seconds",
        "delivery_latency_ms.count",
        "delivery_latency_ms.p50",
        "delivery_latency_ms.p95",
        "delivery_latency_ms.p99",
        "delivery_latency_ms.max",
        "send_latency_ms.p99",
        "goodput.messages_per_min",
        "goodput.deliveries_per_s",
        "requests.send.requests",
        "requests.send.ok",
        "requests.send.rate_limited_429",
        "requests.send.server_error_5xx",
        "requests.send.timeout",
        "requests.send.other",
        "requests.sync.timeout",
        "requests.upload.ok",
        "requests.typing.ok",
        "requests.receipt.ok",
        "generator.cpu_cores",
        "generator.loop_lag_p99_ms",
        "generator.loop_lag_max_ms",
        "generator.saturated",
        "steps[].target_per_min",
        "steps[].offered_per_min",
        "steps[].duration_s",
        "steps[].attempted",
        "steps[].not_sent_backlog",
        "steps[].acknowledged",
        "steps[].deliveries",
        "steps[].goodput.messages_per_min",
        "steps[].delivery_latency_ms.p99",
        "steps[].refused_send_latency_ms.p99",
        "steps[].refused_under_1s",
        "steps[].recovery_s",
        "steps[].error_rate",
        "steps[].sync_gaps",
        "steps[].acknowledged_but_never_delivered",
        "steps[].missing_deliveries",
        "steps[].verdict",
        "steps[].reasons",
        "cleanup.rooms_purged",
        "cleanup.users_deactivated",
        "cleanup.errors",
        "cleanup.purges_unfinished",
    ] {
        assert!(got.iter().any(|g| g == p), "{p} missing from the result");
    }
    assert_eq!(v["schema"], "mxstack-loadtest/3");
    assert_eq!(v["delivery_latency_ms"]["p99"], 20.0);
    assert_eq!(v["requests"]["sync"]["timeout"], 1);
    assert_eq!(v["error_rate"], 0.5);
    assert_eq!(v["verdict"], "fail");
    assert_eq!(v["highest_sustained_per_min"], serde_json::Value::Null);
}

#[test]
fn generator_capacity_estimate() {
    use mxstack_loadtest::run::{check_generator_cpu, ops_per_s};
    let p = Profile::default();
    // Ten rooms of ten, 400/min (bench/delivery.py): 9 deliveries per message.
    let r = mxstack_loadtest::profile::Profile {
        typing_per_min_per_ccu: 0.0,
        receipts_per_min_per_ccu: 0.0,
        ..p.clone()
    }
    .rates(100, None);
    assert!((ops_per_s(&r, &[10; 10], 0.5, 1.0) - 400.0 / 60.0 * 10.0).abs() < 1e-9);
    // Two rooms of 2 and 10: by members (exponent 1) 10/12 of the messages reach 9 members.
    let by_members = mix::mean_fanout(&[2, 10], 1.0);
    assert!((by_members - (2.0 + 90.0) / 12.0).abs() < 1e-9);
    assert!((mix::mean_fanout(&[2, 10], 0.0) - 5.0).abs() < 1e-9);
    assert!(mix::mean_fanout(&[2, 10], 0.5) < by_members);
    let at = |ccu: usize| {
        let r = p.rates(ccu, None);
        ops_per_s(
            &r,
            &mix::room_sizes(&p.room_mix, r.rooms, ccu),
            p.room_activity_exponent,
            1.0,
        )
    };
    for ccu in [100, 1000, 2000, 5000, 20_000] {
        eprintln!("seed profile, {ccu} CCU: {:.0} ops/s", at(ccu));
    }
    assert!(check_generator_cpu(100, at(100)).is_ok());
    let e = check_generator_cpu(20_000, at(20_000)).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("generators"));
}

#[test]
fn recovery_is_the_end_of_the_last_window_over_the_slo() {
    // Slow for the first 12 s, fast after: windows 0, 5 and 10 break a 1 s SLO.
    let mut t: Vec<(f32, f32)> = (0..120).map(|k| (k as f32 * 0.1, 3000.0)).collect();
    t.extend((120..600).map(|k| (k as f32 * 0.1, 80.0)));
    assert_eq!(recovery_seconds(&t, 1000.0, 5.0), Some(15.0));
    assert_eq!(recovery_seconds(&t[120..], 1000.0, 5.0), Some(0.0));
    // Still slow at the end: never recovered.
    t.push((59.9, 5000.0));
    t.push((59.8, 5000.0));
    assert_eq!(recovery_seconds(&t, 1000.0, 5.0), None);
    assert_eq!(recovery_seconds(&[], 1000.0, 5.0), Some(0.0));
}

#[test]
fn share_at_most_counts_the_fast_refusals() {
    let mut l = Latency::default();
    assert_eq!(l.share_at_most(Duration::from_secs(1)), None);
    for ms in [10, 20, 900, 1500] {
        l.record(Duration::from_millis(ms));
    }
    assert_eq!(l.share_at_most(Duration::from_secs(1)), Some(0.75));
}

/// A healthy step of `n` messages over 10 s, each delivered once in 20 ms.
fn healthy(n: u64) -> StepStats {
    let mut s = StepStats {
        target_per_min: n as f64 * 6.0,
        attempted: n,
        acknowledged: n,
        load_seconds: 10.0,
        ..Default::default()
    };
    for k in 0..n {
        s.send.ok();
        s.delivery_latency.record(Duration::from_millis(20));
        s.timeline.push((k as f32 * 10.0 / n as f32, 20.0));
    }
    s
}

fn spike_report(spike: StepStats, after: StepStats) -> serde_json::Value {
    let o = Options {
        spike: Some(10.0),
        ..options()
    };
    let plan = check(&o).unwrap();
    let limits = plan.spike.unwrap();
    assert_eq!(
        limits,
        SpikeInputs {
            factor: 10.0,
            duration_s: 300.0,
            recovery_limit_s: 30.0
        }
    );
    let steps = [healthy(100), spike, after]
        .iter()
        .map(|s| StepReport::from_stats(s, &plan.slo))
        .collect();
    let inputs = Inputs {
        url: plan.url.clone(),
        ccu: 20,
        duration_s: 10.0,
        profile: "seed".into(),
        rates: plan.rates,
        room_activity_exponent: 0.5,
        arrival: plan.profile.arrival,
        ramp: false,
        slo: plan.slo,
        grace_s: 30.0,
        spike: plan.spike,
        seed: plan.seed,
    };
    let r = Report::new(
        "s".into(),
        inputs,
        SetupInfo::default(),
        steps,
        false,
        Cleanup::default(),
    );
    serde_json::to_value(&r).unwrap()
}

#[test]
fn spike_holds_when_refusals_are_fast_nothing_is_lost_and_p99_recovers() {
    let mut spike = healthy(100);
    for _ in 0..900 {
        spike.send.fail(ErrorClass::RateLimited);
        spike.refusal_latency.record(Duration::from_millis(600));
    }
    // After: 60 s, slow for the first 10 s (two windows), then fast.
    let mut after = healthy(400);
    after.timeline = (0..600).map(|k| (k as f32 * 0.1, 20.0)).collect();
    for k in 0..50 {
        after.timeline.push((k as f32 * 0.2, 4000.0));
    }
    let v = spike_report(spike, after);
    assert_eq!(v["verdict"], "pass", "{v:#}");
    assert_eq!(v["spike"]["refused"], 900);
    assert_eq!(v["spike"]["refused_under_1s"], 1.0);
    assert_eq!(v["spike"]["recovery_s"], 10.0);
    assert_eq!(v["spike"]["goodput_per_min"], 600.0);
    let phases: Vec<_> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["phase"].clone())
        .collect();
    assert_eq!(phases, ["before", "spike", "after"]);
}

#[test]
fn spike_fails_on_slow_refusals_a_late_recovery_or_a_lost_message() {
    let mut spike = healthy(100);
    for k in 0..100 {
        spike.send.fail(ErrorClass::Timeout);
        spike
            .refusal_latency
            .record(Duration::from_millis(if k < 5 { 20_000 } else { 300 }));
    }
    spike.never_delivered = 1;
    let mut after = healthy(400);
    after.timeline = (0..600).map(|k| (k as f32 * 0.1, 20.0)).collect();
    for k in 0..200 {
        after.timeline.push((k as f32 * 0.2, 4000.0)); // slow for 40 s
    }
    let v = spike_report(spike, after);
    assert_eq!(v["verdict"], "fail");
    let reasons = v["reasons"].to_string();
    for want in [
        "95.0% of the refused sends were refused within 1 s",
        "40 s after the spike",
        "1 acknowledged messages were never delivered",
    ] {
        assert!(reasons.contains(want), "{want} not in {reasons}");
    }
}
