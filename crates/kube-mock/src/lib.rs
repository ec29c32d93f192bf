//! `MockApiServer`: a Kubernetes API server stand-in for tests (see README.md for what it does
//! and does not do). Named a mock on purpose: it is the only one mxstack allows.

mod controller;
mod resources;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

pub use controller::Behaviour;
pub use resources::{mxstack_crds, Resource};
use store::{Key, Store};

/// One request the server received.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    /// Path without the query.
    pub path: String,
    pub query: BTreeMap<String, String>,
}

impl Request {
    pub fn is_apply(&self) -> bool {
        self.method == "PATCH"
    }
    pub fn dry_run(&self) -> bool {
        self.query.get("dryRun").is_some_and(|v| v == "All")
    }
}

#[derive(Default)]
struct Inner {
    resources: Vec<Resource>,
    store: Store,
    behaviours: BTreeMap<(String, String), Behaviour>,
    reads: BTreeMap<Key, u32>,
    /// (kind, name) -> (manager, JSON pointer) owned by another field manager.
    claims: Vec<(String, String, String, String)>,
    /// (verb, plural) refused with 403.
    forbidden: BTreeSet<(String, String)>,
    token: Option<String>,
    events: Vec<Value>,
    log: Vec<Request>,
    version: String,
}

/// The server. Dropping it stops it.
pub struct MockApiServer {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    _runtime: tokio::runtime::Runtime,
}

impl MockApiServer {
    /// Starts on 127.0.0.1 (a free port) serving the built-in kinds plus `extra` (custom
    /// resources whose CRDs are "installed"), Kubernetes `git_version` (e.g. "v1.33.1").
    pub fn start(git_version: &str, extra: &[Resource]) -> MockApiServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut resources = resources::built_in();
        resources.extend(extra.iter().cloned());
        let inner = Arc::new(Mutex::new(Inner {
            resources,
            version: git_version.to_string(),
            ..Default::default()
        }));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        runtime.spawn(async move { axum::serve(listener, app).await });
        MockApiServer {
            addr,
            inner,
            _runtime: runtime,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig file's contents pointing at this server (with `token`, if set).
    pub fn kubeconfig(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: {}\n\
             users:\n- name: mock\n  user:\n    token: {token}\ncontexts:\n- name: mock\n  context:\n    \
             cluster: mock\n    user: mock\n    namespace: default\ncurrent-context: mock\n",
            self.url()
        )
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("mock state"))
    }

    /// Requests need `Authorization: Bearer <token>` from now on.
    pub fn require_token(&self, token: &str) {
        self.with(|i| i.token = Some(token.to_string()));
    }

    /// `verb` (get, list, patch, delete) on `plural` answers 403.
    pub fn forbid(&self, verb: &str, plural: &str) {
        self.with(|i| i.forbidden.insert((verb.into(), plural.into())));
    }

    /// How the stand-in controller reports the object `kind`/`name` (any namespace).
    pub fn behave(&self, kind: &str, name: &str, b: Behaviour) {
        self.with(|i| i.behaviours.insert((kind.into(), name.into()), b));
    }

    /// Another field manager owns `pointer` (e.g. `/spec/replicas`) of `kind`/`name`.
    pub fn claim(&self, kind: &str, name: &str, manager: &str, pointer: &str) {
        self.with(|i| {
            i.claims
                .push((kind.into(), name.into(), manager.into(), pointer.into()))
        });
    }

    /// Stores `object` as if someone else had created it.
    pub fn seed(&self, object: Value) {
        self.with(|i| {
            let key = Key::of(&object);
            i.store.put(key, object, false);
        });
    }

    /// Adds an event about `kind`/`name` in `namespace`.
    pub fn event(&self, namespace: &str, kind: &str, name: &str, reason: &str, message: &str) {
        self.with(|i| {
            let n = i.events.len();
            i.events.push(json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": format!("{name}.{n}"), "namespace": namespace},
                "involvedObject": {"kind": kind, "name": name, "namespace": namespace},
                "reason": reason, "message": message, "type": "Warning",
                "lastTimestamp": "2026-12-05T12:00:00Z",
            }))
        });
    }

    /// The stored object, as the server holds it.
    pub fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        self.with(|i| i.store.find(kind, namespace, name).cloned())
    }

    /// Every stored object.
    pub fn objects(&self) -> Vec<Value> {
        self.with(|i| i.store.all().cloned().collect())
    }

    /// Every request so far, in order.
    pub fn log(&self) -> Vec<Request> {
        self.with(|i| i.log.clone())
    }

    pub fn clear_log(&self) {
        self.with(|i| i.log.clear());
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut i = inner.lock().expect("mock state");
    i.log.push(Request {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: query.clone(),
    });
    if let Some(t) = &i.token {
        let sent = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if sent != format!("Bearer {t}") {
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        }
    }
    let (code, value) = route(&mut i, &method, uri.path(), &query, &body);
    (code, axum::Json(value)).into_response()
}

fn route(
    i: &mut Inner,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    body: &[u8],
) -> (StatusCode, Value) {
    if path == "/version" {
        let v = i.version.trim_start_matches('v');
        let mut parts = v.split('.');
        return (
            StatusCode::OK,
            json!({"major": parts.next().unwrap_or("1"), "minor": parts.next().unwrap_or("0"),
                   "gitVersion": i.version, "platform": "linux/amd64"}),
        );
    }
    if let Some(list) = resources::discovery(&i.resources, path) {
        return (StatusCode::OK, list);
    }
    let Some(target) = resources::parse_path(&i.resources, path) else {
        return status_value(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let verb = match (method.as_str(), &target.name) {
        ("GET", None) => "list",
        ("GET", Some(_)) => "get",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => {
            return status_value(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "method not allowed",
            )
        }
    };
    if i.forbidden
        .contains(&(verb.to_string(), target.res.plural.clone()))
    {
        return status_value(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &target.forbidden_message(verb),
        );
    }
    match verb {
        "list" if target.res.kind == "Event" => events(i, &target, query),
        "list" => store::list(i, &target, query),
        "get" => store::get(i, &target),
        "delete" => store::delete(i, &target),
        _ => store::apply(i, &target, query, body),
    }
}

fn events(
    i: &Inner,
    target: &resources::Target,
    query: &BTreeMap<String, String>,
) -> (StatusCode, Value) {
    let want = store::selector(query.get("fieldSelector"));
    let items: Vec<Value> = i
        .events
        .iter()
        .filter(|e| {
            target
                .namespace
                .as_deref()
                .is_none_or(|ns| e["metadata"]["namespace"] == ns)
        })
        .filter(|e| {
            want.iter().all(|(k, v)| {
                let field = k.strip_prefix("involvedObject.").unwrap_or(k);
                e["involvedObject"][field].as_str() == Some(v.as_str())
            })
        })
        .cloned()
        .collect();
    (
        StatusCode::OK,
        json!({"apiVersion": "v1", "kind": "EventList", "metadata": {"resourceVersion": "1"}, "items": items}),
    )
}

fn status_value(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let (c, v) = status_value(code, reason, message);
    (c, axum::Json(v)).into_response()
}
