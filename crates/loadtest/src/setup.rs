//! Before the load: credentials, users, rooms, each user's first sync. After it (and on
//! Ctrl-C): rooms purged, users deactivated with erase, their media deleted, the run's admin
//! last. Everything is named `mxlt-<run id>-…`.

use std::cell::RefCell;
use std::future::Future;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Semaphore;

use crate::error::LoadError;
use crate::matrix::{escape, Api, Failure};

const T: Duration = Duration::from_secs(60);
/// Concurrent setup and cleanup requests: admin APIs run on Synapse main, which the run
/// shares with everything else.
pub const SETUP_CONCURRENCY: usize = 8;

pub struct Admin {
    pub user_id: String,
    pub token: String,
    /// Registered by this run (shared-secret mode): deactivated at the end.
    pub own: bool,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub token: String,
}

#[derive(Debug, Clone)]
pub struct Room {
    pub id: String,
    pub members: Vec<usize>,
}

/// What exists on the server, for cleanup even after a partial setup.
#[derive(Default, Clone)]
pub struct Created {
    pub users: Vec<String>,
    pub rooms: Vec<String>,
}

/// `n` futures, at most `limit` at a time, results in order. Needs a LocalSet.
pub async fn bounded<T: 'static, F: Future<Output = T> + 'static>(
    limit: usize,
    futs: Vec<F>,
) -> Vec<T> {
    let sem = Rc::new(Semaphore::new(limit));
    let handles: Vec<_> = futs
        .into_iter()
        .map(|f| {
            let sem = sem.clone();
            tokio::task::spawn_local(async move {
                let _p = sem.acquire().await.expect("never closed");
                f.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("setup task panicked"));
    }
    out
}

/// A failed purge is asked for again this many times.
const PURGE_RETRIES: u32 = 5;

/// Polls each purge's `delete_status` until it is `complete` or `failed`, at most `wait`;
/// returns how many failed and how many were still running.
///
/// A failed purge is started again, up to [`PURGE_RETRIES`] times: on a young server Synapse's
/// purge fails while its background update still lists the room in
/// `sliding_sync_joined_rooms_to_recalculate` (a foreign key; element-hq/synapse#19822), and
/// succeeds once the update has drained that table.
async fn wait_purges(
    api: &Api,
    token: &str,
    mut pending: Vec<(String, u32)>,
    wait: Duration,
) -> (usize, usize) {
    let deadline = std::time::Instant::now() + wait;
    let mut failed = 0;
    let mut said = 0;
    while !pending.is_empty() && std::time::Instant::now() < deadline {
        let mut still = Vec::new();
        for (id, tries) in pending {
            let path = format!("/_synapse/admin/v2/rooms/delete_status/{}", escape(&id));
            match api.get(&path, Some(token), T).await {
                Ok(v) if v["status"] == "complete" => {}
                Ok(v) if v["status"] == "failed" => match restart(api, token, &v, tries).await {
                    Some(again) => still.push((again, tries + 1)),
                    None => failed += 1,
                },
                // Still running, or not answered this time: asked again.
                _ => still.push((id, tries)),
            }
        }
        pending = still;
        if !pending.is_empty() {
            if pending.len() != said {
                said = pending.len();
                eprintln!("mxstack loadtest: waiting for Synapse to purge {said} rooms");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    (failed, pending.len())
}

/// Starts a failed purge (its `delete_status` answer `status`) again; the new delete id, or
/// None (said on stderr) after [`PURGE_RETRIES`] attempts or when Synapse refuses.
async fn restart(api: &Api, token: &str, status: &serde_json::Value, tries: u32) -> Option<String> {
    let room = status["room_id"].as_str().unwrap_or_default();
    if tries >= PURGE_RETRIES || room.is_empty() {
        eprintln!(
            "mxstack loadtest: cleanup: Synapse's purge of {room} failed {} times (its log says why)",
            tries + 1
        );
        return None;
    }
    match purge(api, token, room).await {
        Ok(id) => id,
        Err(e) => {
            eprintln!("mxstack loadtest: cleanup: deleting {room} again: {e}");
            None
        }
    }
}

/// Starts the deletion and purge of `room`; Synapse's delete id, if it gave one.
async fn purge(api: &Api, token: &str, room: &str) -> Result<Option<String>, Failure> {
    let path = format!("/_synapse/admin/v2/rooms/{}", escape(room));
    let v = api
        .delete(&path, token, json!({"purge": true, "block": false}), T)
        .await?;
    Ok(v["delete_id"].as_str().map(str::to_string))
}

/// The registration shared secret from the secrets.yaml next to `config`.
pub fn shared_secret(config: &Path) -> Result<String, LoadError> {
    let path = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("secrets.yaml");
    let s = mxstack_spec::Secrets::load(&path)
        .map_err(|e| LoadError::BadInput(format!("{}: {}", path.display(), e.message)))?;
    let v = s.get(mxstack_spec::SecretName::RegistrationSharedSecret);
    if v.trim().is_empty() {
        return Err(LoadError::NoRegistration(format!(
            "{} has no registration_shared_secret: pass --admin-token instead",
            path.display()
        )));
    }
    Ok(v.to_string())
}

/// The admin this run acts as: the token's user (checked to be a server admin), or one it
/// registers with the shared secret.
pub async fn admin(
    api: &Api,
    token: Option<&str>,
    secret: Option<&str>,
    run: &str,
) -> Result<Admin, LoadError> {
    if let Some(t) = token {
        let who = api
            .get("/_matrix/client/v3/account/whoami", Some(t), T)
            .await
            .map_err(|e| LoadError::BadInput(format!("--admin-token is not accepted ({e})")))?;
        let user_id = who["user_id"].as_str().unwrap_or_default().to_string();
        api.get("/_synapse/admin/v2/users?limit=1", Some(t), T)
            .await
            .map_err(|e| LoadError::BadInput(format!("--admin-token: {user_id} is not a server admin, or the admin API is not reachable at this URL ({e})")))?;
        return Ok(Admin {
            user_id,
            token: t.to_string(),
            own: false,
        });
    }
    let secret = secret.ok_or(LoadError::NoCredentials)?;
    let password = random_hex(16);
    let (user_id, token) = api
        .register(secret, &format!("mxlt-{run}-admin"), &password)
        .await
        .map_err(|e| match e.status {
            // Synapse: 403 "HMAC incorrect" for a wrong secret.
            Some(403) if e.reason.contains("HMAC") => LoadError::NoRegistration(
                "the registration shared secret in secrets.yaml does not match this deployment's"
                    .into(),
            ),
            // 400 "Shared secret registration is not enabled", or 403/404 when the admin route
            // is not exposed at this URL.
            Some(400) | Some(403) | Some(404) => LoadError::NoRegistration(format!(
                "this deployment refuses shared-secret registration ({e}); pass --admin-token"
            )),
            _ => LoadError::Setup(format!("registering the run's admin: {e}")),
        })?;
    Ok(Admin {
        user_id,
        token,
        own: true,
    })
}

pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the OS has randomness");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Users without passwords (no bcrypt on main), each logged in through the admin API.
pub async fn users(
    api: &Api,
    admin: &Admin,
    run: &str,
    n: usize,
    created: &Rc<RefCell<Created>>,
) -> Result<Vec<User>, LoadError> {
    let server = admin
        .user_id
        .split_once(':')
        .map(|x| x.1)
        .unwrap_or_default()
        .to_string();
    let futs = (0..n)
        .map(|k| {
            let (api, token, created) = (api.clone(), admin.token.clone(), created.clone());
            let id = format!("@mxlt-{run}-u{k}:{server}");
            async move {
                let path = format!("/_synapse/admin/v2/users/{}", escape(&id));
                // Recorded first: a creation whose answer is lost is still cleaned up.
                created.borrow_mut().users.push(id.clone());
                api.put(
                    &path,
                    &token,
                    json!({"displayname": format!("mxlt u{k}")}),
                    T,
                )
                .await?;
                let login = format!("/_synapse/admin/v1/users/{}/login", escape(&id));
                let v = api.post(&login, &token, json!({}), T).await?;
                let token = v["access_token"].as_str().unwrap_or_default().to_string();
                Ok::<User, Failure>(User { id, token })
            }
        })
        .collect();
    bounded(SETUP_CONCURRENCY, futs)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::Setup(format!("creating users: {e}")))
}

/// Rooms created by their first member (public within the server, unlisted) and joined by the
/// others through the admin API, which skips the per-room join rate limit (1/s after 10) that
/// would make a large room take minutes.
pub async fn rooms(
    api: &Api,
    admin: &Admin,
    users: &[User],
    plan: Vec<Vec<usize>>,
    run: &str,
    created: &Rc<RefCell<Created>>,
) -> Result<Vec<Room>, LoadError> {
    let futs = plan
        .into_iter()
        .enumerate()
        .map(|(k, members)| {
            let (api, atoken, created) = (api.clone(), admin.token.clone(), created.clone());
            let ids: Vec<String> = members.iter().map(|&m| users[m].id.clone()).collect();
            let creator = users[members[0]].token.clone();
            let name = format!("mxlt-{run}-r{k}");
            async move {
                let body = json!({"preset": "public_chat", "visibility": "private", "name": name});
                let v = api
                    .post("/_matrix/client/v3/createRoom", &creator, body, T)
                    .await?;
                let id = v["room_id"].as_str().unwrap_or_default().to_string();
                created.borrow_mut().rooms.push(id.clone());
                let path = format!("/_synapse/admin/v1/join/{}", escape(&id));
                for uid in &ids[1..] {
                    api.post(&path, &atoken, json!({"user_id": uid}), T).await?;
                }
                Ok::<Room, Failure>(Room { id, members })
            }
        })
        .collect();
    bounded(SETUP_CONCURRENCY, futs)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::Setup(format!("creating rooms: {e}")))
}

/// Result of cleanup, for the report.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Cleanup {
    pub rooms_purged: usize,
    pub users_deactivated: usize,
    pub errors: usize,
    /// Purges Synapse was still running when cleanup stopped waiting ([`PURGE_WAIT`]).
    pub purges_unfinished: usize,
}

/// How long cleanup waits for Synapse's background purges to finish.
pub const PURGE_WAIT: Duration = Duration::from_secs(600);

/// Rooms first (purging kicks the members), then users with their media, the run's admin last.
///
/// A room delete returns at once and Synapse purges in the background: cleanup waits for every
/// purge to finish, else the next run would share the server with them (bench/tier.py's runs
/// declined run after run until it did).
pub async fn cleanup(api: &Api, admin: &Admin, created: &Created) -> Cleanup {
    let mut c = Cleanup::default();
    let deletes = created.rooms.iter().map(|r| {
        let (api, t, room) = (api.clone(), admin.token.clone(), r.clone());
        async move {
            purge(&api, &t, &room)
                .await
                .map_err(|e| eprintln!("mxstack loadtest: cleanup: deleting a room: {e}"))
                .ok()
        }
    });
    let mut pending = Vec::new();
    for accepted in bounded(SETUP_CONCURRENCY, deletes.collect()).await {
        match accepted {
            Some(id) => {
                c.rooms_purged += 1;
                pending.extend(id.map(|id| (id, 0)));
            }
            None => c.errors += 1,
        }
    }
    let (failed, unfinished) = wait_purges(api, &admin.token, pending, PURGE_WAIT).await;
    c.errors += failed;
    c.purges_unfinished = unfinished;
    let deact = created.users.iter().map(|u| {
        let (api, t) = (api.clone(), admin.token.clone());
        let uid = escape(u);
        async move {
            // Media first: erase does not remove uploads.
            let media = api
                .call(
                    reqwest::Method::DELETE,
                    &format!("/_synapse/admin/v1/users/{uid}/media"),
                    Some(&t),
                    None,
                    T,
                )
                .await;
            let d = api
                .post(
                    &format!("/_synapse/admin/v1/deactivate/{uid}"),
                    &t,
                    json!({"erase": true}),
                    T,
                )
                .await;
            for (what, r) in [("deleting the media of", &media), ("deactivating", &d)] {
                if let Err(e) = r {
                    eprintln!("mxstack loadtest: cleanup: {what} a user: {e}");
                }
            }
            media.is_ok() && d.is_ok()
        }
    });
    for ok in bounded(SETUP_CONCURRENCY, deact.collect()).await {
        if ok {
            c.users_deactivated += 1
        } else {
            c.errors += 1
        }
    }
    if admin.own {
        let uid = escape(&admin.user_id);
        match api
            .post(
                &format!("/_synapse/admin/v1/deactivate/{uid}"),
                &admin.token,
                json!({"erase": true}),
                T,
            )
            .await
        {
            Ok(_) => c.users_deactivated += 1,
            Err(e) => {
                eprintln!("mxstack loadtest: cleanup: deactivating the run's admin: {e}");
                c.errors += 1
            }
        }
    }
    c
}
