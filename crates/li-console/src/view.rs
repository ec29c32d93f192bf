//! What a warrant shows: a room's timeline in the warrant's window, each event at its fullest
//! (the original of a censored redaction, events main purged), encrypted events decrypted with
//! the target users' escrowed keys, edits gathered under what they edit. The pages and the
//! evidence export both render this one model, so they cannot disagree.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use crate::e2ee::{self, BackupKey, RoomKeys};
use crate::media::MediaRef;
use crate::replica::{Replica, TimelineEvent};
use crate::store::Warrant;
use crate::vault::VaultClient;

/// One event as the console shows and exports it.
#[derive(Debug, Clone, Serialize)]
pub struct ViewEvent {
    pub event_id: String,
    pub event_type: String,
    pub sender: String,
    pub origin_server_ts: i64,
    /// The content shown: decrypted when the event was encrypted and could be decrypted, the
    /// original when main censored it.
    pub content: Value,
    /// `m.room.encrypted` on the wire.
    pub encrypted: bool,
    /// Decrypted: which session and index; not decrypted: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decrypted_with: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undecryptable: Option<String>,
    /// The redaction event that redacted this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redacted_by: Option<String>,
    /// Main holds only the pruned event now; `content` is the original from the replica's history.
    pub censored_on_main: bool,
    /// Main no longer has the event at all (purge, room deletion): how it went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_on_main: Option<String>,
    /// Synapse rejected the event (auth rules): it never took effect in the room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// This event replaces (edits) that one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// Edits of this event, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub edits: Vec<Edit>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Edit {
    pub event_id: String,
    pub origin_server_ts: i64,
    pub sender: String,
    /// The new text (`m.new_content.body`), if any.
    pub body: Option<String>,
    pub redacted_by: Option<String>,
}

impl ViewEvent {
    /// A one-line text for the page.
    pub fn summary(&self) -> String {
        let c = &self.content;
        match self.event_type.as_str() {
            "m.room.message" => c["body"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| "(message without body)".into()),
            "m.room.member" => format!(
                "membership: {}",
                c["membership"].as_str().unwrap_or("(unknown)")
            ),
            "m.room.encrypted" => "(encrypted)".into(),
            "m.room.redaction" => "(redaction)".into(),
            "m.room.name" => format!("room name: {}", c["name"].as_str().unwrap_or("")),
            other => format!("{other}: {}", c),
        }
    }

    pub fn media(&self) -> Option<MediaRef> {
        MediaRef::from_content(&self.content)
    }
}

/// A retrieval of escrowed keys made while building a view (the caller audits each).
#[derive(Debug, Clone)]
pub struct KeyRetrieval {
    pub user_id: String,
    pub versions: usize,
    /// Which version opened the current backup, or why none did.
    pub outcome: String,
}

struct UserKeys {
    user_id: String,
    key: Result<(BackupKey, i64), String>,
    loaded_rooms: HashSet<String>,
    room_keys: RoomKeys,
}

/// The target users' key rings for one request. Keys are retrieved from the vault once per user
/// and dropped with this value.
pub struct Decryption {
    users: Vec<UserKeys>,
    pub retrievals: Vec<KeyRetrieval>,
}

impl Decryption {
    /// Retrieves and opens every target user's escrowed keys under `warrant`.
    pub async fn for_warrant(
        warrant: &Warrant,
        replica: &Replica,
        vault: &VaultClient,
    ) -> Result<Decryption, String> {
        let mut users = Vec::new();
        let mut retrievals = Vec::new();
        for user_id in &warrant.terms.target_users {
            let escrowed = vault.retrieve(user_id, warrant).await?;
            let versions = escrowed.len();
            let key = open_backup(replica, user_id, escrowed).await?;
            retrievals.push(KeyRetrieval {
                user_id: user_id.clone(),
                versions,
                outcome: match &key {
                    Ok((_, v, ev)) => format!("escrowed version {ev} opens key backup {v}"),
                    Err(reason) => reason.clone(),
                },
            });
            users.push(UserKeys {
                user_id: user_id.clone(),
                key: key.map(|(k, v, _)| (k, v)),
                loaded_rooms: HashSet::new(),
                room_keys: RoomKeys::new(),
            });
        }
        Ok(Decryption { users, retrievals })
    }

    /// A decryption context that decrypts nothing (no target users).
    pub fn none() -> Decryption {
        Decryption {
            users: Vec::new(),
            retrievals: Vec::new(),
        }
    }

    async fn decrypt(
        &mut self,
        replica: &Replica,
        room_id: &str,
        content: &Value,
    ) -> Result<(Value, String), String> {
        if self.users.is_empty() {
            return Err("the warrant names no target user whose escrowed key could open it".into());
        }
        let mut reasons = Vec::new();
        for u in &mut self.users {
            let (key, version) = match &u.key {
                Ok(k) => k,
                Err(reason) => {
                    reasons.push(format!("{}: {reason}", u.user_id));
                    continue;
                }
            };
            if u.loaded_rooms.insert(room_id.to_string()) {
                for (session_id, data) in replica.room_keys(&u.user_id, *version, room_id).await? {
                    // A session that does not open is reported when a message needs it.
                    if let Ok(k) = key.decrypt_session(&data) {
                        let _ = u.room_keys.add(room_id, &session_id, &k);
                    }
                }
            }
            match u.room_keys.decrypt(room_id, content) {
                Ok(d) => {
                    return Ok((
                        d.event,
                        format!(
                            "{}'s key backup, session {}, message index {}",
                            u.user_id, d.session_id, d.message_index
                        ),
                    ))
                }
                Err(e) => reasons.push(format!("{}: {e}", u.user_id)),
            }
        }
        Err(reasons.join("; "))
    }
}

/// Finds the escrowed version that opens the user's current backup, newest first.
async fn open_backup(
    replica: &Replica,
    user_id: &str,
    escrowed: Vec<crate::vault::EscrowedKey>,
) -> Result<Result<(BackupKey, i64, i64), String>, String> {
    if escrowed.is_empty() {
        return Ok(Err(e2ee::Undecryptable::NoEscrowedKey.to_string()));
    }
    let Some(backup) = replica.current_backup(user_id).await? else {
        return Ok(Err(e2ee::Undecryptable::NoBackup.to_string()));
    };
    let account_data = replica.account_data(user_id).await?;
    let mut reasons = Vec::new();
    for k in escrowed {
        let kind = match k.kind.parse::<e2ee::EscrowedKind>() {
            Ok(kind) => kind,
            Err(_) => {
                reasons.push(format!("version {}: unknown kind {:?}", k.version, k.kind));
                continue;
            }
        };
        let opened = e2ee::backup_decryption_key(kind, &k.key, &account_data).and_then(|bk| {
            bk.check_backup(&backup.algorithm, &backup.auth_data)?;
            Ok(bk)
        });
        match opened {
            Ok(bk) => return Ok(Ok((bk, backup.version, k.version))),
            Err(e) => reasons.push(format!("version {}: {e}", k.version)),
        }
    }
    Ok(Err(format!(
        "no escrowed key opens key backup {}: {}",
        backup.version,
        reasons.join("; ")
    )))
}

/// The room's timeline in the warrant's window, decrypted where possible, edits gathered.
pub async fn room_timeline(
    replica: &Replica,
    decryption: &mut Decryption,
    warrant: &Warrant,
    room_id: &str,
) -> Result<Vec<ViewEvent>, String> {
    let events = replica
        .timeline(
            room_id,
            warrant.terms.window_start_ms,
            warrant.terms.window_end_ms,
        )
        .await?;
    let mut out = Vec::with_capacity(events.len());
    for e in &events {
        out.push(view_event(replica, decryption, room_id, e).await?);
    }
    Ok(gather_edits(out))
}

async fn view_event(
    replica: &Replica,
    decryption: &mut Decryption,
    room_id: &str,
    e: &TimelineEvent,
) -> Result<ViewEvent, String> {
    let full = e.fullest();
    let clear = full["content"].clone();
    let mut v = ViewEvent {
        event_id: e.event_id.clone(),
        event_type: e.event_type.clone(),
        sender: e.sender.clone(),
        origin_server_ts: e.ts,
        content: clear.clone(),
        encrypted: e.event_type == "m.room.encrypted",
        decrypted_with: None,
        undecryptable: None,
        redacted_by: e.redacted_by.clone(),
        censored_on_main: e.original.is_some(),
        removed_on_main: e.removed.clone(),
        rejected: e.rejected.clone(),
        replaces: replaced_event(&clear),
        edits: Vec::new(),
    };
    if v.encrypted {
        if clear.get("ciphertext").is_none() {
            v.undecryptable = Some("the ciphertext is gone and no history row keeps it".into());
        } else {
            match decryption.decrypt(replica, room_id, &clear).await {
                Ok((plain, how)) => {
                    v.event_type = plain["type"].as_str().unwrap_or("(no type)").to_string();
                    v.content = plain["content"].clone();
                    v.replaces = v.replaces.or_else(|| replaced_event(&v.content));
                    v.decrypted_with = Some(how);
                }
                Err(reason) => v.undecryptable = Some(reason),
            }
        }
    }
    Ok(v)
}

fn replaced_event(content: &Value) -> Option<String> {
    let rel = &content["m.relates_to"];
    (rel["rel_type"] == "m.replace")
        .then(|| rel["event_id"].as_str().map(str::to_string))
        .flatten()
}

/// Puts each edit under the event it edits, when that event is in the list, is not itself an
/// edit and has the same sender (the spec's rule: anyone else's `m.replace` is not an edit, and
/// shown under the original it would put words in its sender's mouth). Other replacements stay
/// in the list on their own.
fn gather_edits(events: Vec<ViewEvent>) -> Vec<ViewEvent> {
    let originals: HashMap<String, String> = events
        .iter()
        .filter(|e| e.replaces.is_none())
        .map(|e| (e.event_id.clone(), e.sender.clone()))
        .collect();
    let mut edits: HashMap<String, Vec<Edit>> = HashMap::new();
    let mut kept = Vec::new();
    for e in events {
        match &e.replaces {
            Some(target) if originals.get(target) == Some(&e.sender) => {
                edits.entry(target.clone()).or_default().push(Edit {
                    event_id: e.event_id.clone(),
                    origin_server_ts: e.origin_server_ts,
                    sender: e.sender.clone(),
                    body: e.content["m.new_content"]["body"]
                        .as_str()
                        .or(e.content["body"].as_str())
                        .map(str::to_string),
                    redacted_by: e.redacted_by.clone(),
                });
            }
            _ => kept.push(e),
        }
    }
    for e in &mut kept {
        if let Some(mut list) = edits.remove(&e.event_id) {
            list.sort_by_key(|x| x.origin_server_ts);
            e.edits = list;
        }
    }
    kept
}

/// Rooms of a warrant with their timelines (for the export).
pub type Timelines = BTreeMap<String, Vec<ViewEvent>>;
