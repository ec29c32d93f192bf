//! The coordinated restart of Synapse (`mxstack_deploy::coordinate`) against MockApiServer (the
//! one mock mxstack allows: no API server runs here): a change of the event persisters stops
//! every Synapse workload before any starts, main first; an unchanged deploy does not; dry run
//! stops nothing; `--coordinated` forces it.

mod common;

use common::*;
use mxstack_deploy::{deploy, Event, Item, Options};
use mxstack_kube_mock::MockApiServer;
use mxstack_spec::{Component, ComponentOverride, Config, Tier};

fn persisters(n: u32) -> Config {
    let mut c = config(Tier::T1k, &[]);
    c.overrides.insert(
        Component::EventPersister,
        ComponentOverride {
            replicas: Some(n),
            ..Default::default()
        },
    );
    c
}

fn run(server: &MockApiServer, items: &[Item], opts: Options) -> Vec<Event> {
    let rt = runtime();
    let (_dir, cluster) = connect(&rt, server);
    let mut events = Vec::new();
    rt.block_on(deploy(&cluster, items, HOME, opts, &mut |e| events.push(e)))
        .expect("deploy succeeds");
    events
}

fn synapse_workloads(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .filter(|i| mxstack_deploy::coordinate::is_synapse_workload(i))
        .map(|i| i.id())
        .collect()
}

fn position(events: &[Event], f: impl Fn(&Event) -> bool) -> Option<usize> {
    events.iter().position(f)
}

#[test]
fn a_new_event_persister_stops_every_synapse_process_before_any_starts_main_first() {
    let server = server();
    let s = secrets();
    let one = items(&persisters(1), &s);
    let first = run(&server, &one, options());
    assert!(
        !first.iter().any(|e| matches!(e, Event::Coordinated { .. })),
        "a first deploy has nothing to coordinate"
    );
    let again = run(&server, &one, options());
    assert!(!again
        .iter()
        .any(|e| matches!(e, Event::Coordinated { .. } | Event::ScaledToZero { .. })));

    let two = items(&persisters(2), &s);
    let events = run(&server, &two, options());
    let reason = events.iter().find_map(|e| match e {
        Event::Coordinated { reason } => Some(reason.clone()),
        _ => None,
    });
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("stream_writers")),
        "{reason:?}"
    );
    let workloads = synapse_workloads(&two);
    assert!(workloads.len() >= 5, "{workloads:?}");
    let stopped: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            Event::ScaledToZero { object, .. } => Some(object),
            _ => None,
        })
        .collect();
    assert_eq!(stopped.len(), workloads.len(), "{stopped:?}");
    let last_stop = events
        .iter()
        .rposition(|e| matches!(e, Event::ScaledToZero { .. }))
        .unwrap();
    let applied = |name: &str| {
        position(
            &events,
            |e| matches!(e, Event::Applied { object, .. } if object == name),
        )
    };
    let main_ready = position(
        &events,
        |e| matches!(e, Event::Ready { object, .. } if object == "StatefulSet/synapse-main"),
    )
    .unwrap();
    assert!(applied("StatefulSet/synapse-main").unwrap() > last_stop);
    for w in workloads.iter().filter(|w| !w.ends_with("/synapse-main")) {
        if let Some(i) = applied(w) {
            assert!(i > main_ready, "{w} applied before main was ready");
        }
    }
    let sts = server
        .get("StatefulSet", Some(HOME), "synapse-event-persister")
        .expect("event persisters");
    assert_eq!(
        sts["spec"]["replicas"], 2,
        "the final apply sets the rendered count"
    );
}

#[test]
fn dry_run_reports_the_coordination_and_stops_nothing_and_coordinated_forces_it() {
    let server = server();
    let s = secrets();
    run(&server, &items(&persisters(1), &s), options());
    let two = items(&persisters(2), &s);
    let dry = run(
        &server,
        &two,
        Options {
            dry_run: true,
            ..options()
        },
    );
    assert!(dry.iter().any(|e| matches!(e, Event::Coordinated { .. })));
    assert!(!dry.iter().any(|e| matches!(e, Event::ScaledToZero { .. })));
    let sts = server
        .get("StatefulSet", Some(HOME), "synapse-event-persister")
        .unwrap();
    assert_eq!(sts["spec"]["replicas"], 1);

    let same = items(&persisters(1), &s);
    let forced = run(
        &server,
        &same,
        Options {
            coordinated: true,
            ..options()
        },
    );
    assert!(forced
        .iter()
        .any(|e| matches!(e, Event::Coordinated { reason } if reason.contains("--coordinated"))));
    assert!(forced
        .iter()
        .any(|e| matches!(e, Event::ScaledToZero { .. })));
}
