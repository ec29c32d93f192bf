//! What can go wrong talking to a cluster, each with the fix an operator needs.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the kubeconfig {path}: {message}; fix: pass --kubeconfig FILE or set KUBECONFIG to a valid file")]
    Kubeconfig { path: String, message: String },
    #[error("cannot reach the cluster at {server}: {message}; fix: check the kubeconfig's current context and that the API server is reachable from here")]
    Unreachable { server: String, message: String },
    #[error("the cluster at {server} refused the credentials (401 Unauthorized); fix: renew the token or client certificate of the kubeconfig's user")]
    Unauthorized { server: String },
    #[error("permission missing: {message}; fix: grant the deploying identity `{verb}` on `{resource}` (docs/DEPLOY.md lists every permission mxstack needs)")]
    Forbidden {
        verb: String,
        resource: String,
        message: String,
    },
    #[error("the cluster does not serve {kind} ({api_version}); fix: install {needs} first (`mxstack check --cluster` lists what is missing)")]
    MissingKind {
        api_version: String,
        kind: String,
        needs: String,
    },
    #[error("{object}: {message}; fix: another tool manages these fields; stop managing them there, or re-run with --force-conflicts to take them over")]
    Conflict { object: String, message: String },
    #[error("{object}: {message}; fix: {fix}")]
    Immutable {
        object: String,
        message: String,
        fix: String,
    },
    #[error("{object}: the API server answered {code} {reason}: {message}")]
    Api {
        object: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{object}: not ready after {:.1}s: {last}{}; fix: look at the conditions and events above, correct the cause, then re-run (a re-run resumes the waits), or raise --timeout", waited.as_secs_f64(), events_text(.events))]
    Timeout {
        object: String,
        waited: Duration,
        last: String,
        events: Vec<String>,
    },
    #[error("{object}: failed: {message}")]
    Failed { object: String, message: String },
    #[error("{0}")]
    Other(String),
}

fn events_text(events: &[String]) -> String {
    if events.is_empty() {
        "; no events".to_string()
    } else {
        format!("; events: {}", events.join(" | "))
    }
}

impl Error {
    /// A kube-rs error about `object` (e.g. `Deployment/synapse-main`), with the permission
    /// named when the answer is 403.
    pub(crate) fn from_kube(
        server: &str,
        object: &str,
        verb: &str,
        resource: &str,
        e: kube::Error,
    ) -> Error {
        match e {
            kube::Error::Api(s) => match s.code {
                401 => Error::Unauthorized {
                    server: server.into(),
                },
                403 => Error::Forbidden {
                    verb: verb.into(),
                    resource: resource.into(),
                    message: s.message.clone(),
                },
                409 if s.reason == "Conflict" => Error::Conflict {
                    object: object.into(),
                    message: s.message.clone(),
                },
                _ => Error::Api {
                    object: object.into(),
                    code: s.code,
                    reason: s.reason.clone(),
                    message: s.message.clone(),
                },
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => Error::Unreachable {
                server: server.into(),
                message: root_cause(&e),
            },
            other => Error::Other(format!("{object}: {}", root_cause(&other))),
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Api { code: 404, .. })
    }
}

/// The innermost cause: "connection refused" rather than "service error".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
