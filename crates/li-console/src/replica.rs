//! What the console reads from the LI replica: Synapse's tables as main has them now, and
//! `mxstack_li.row_history`, where li-sync keeps every row main changed or removed (censored
//! redactions, purged history, deleted rooms). Read only: the console's role is a member of
//! `pg_read_all_data` and nothing else.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

/// Most events one timeline page shows.
pub const TIMELINE_LIMIT: i64 = 2000;

pub struct Replica {
    config: tokio_postgres::Config,
    client: Mutex<Option<Arc<Client>>>,
}

/// A room the warrant reaches, and why.
#[derive(Debug, Clone)]
pub struct RoomSummary {
    pub room_id: String,
    pub name: Option<String>,
    pub encrypted: bool,
    /// "named in the warrant" or "@user was a member".
    pub reason: String,
}

/// One event of a timeline, with what the replica's history adds to it.
#[derive(Debug, Clone)]
pub struct TimelineEvent {
    pub event_id: String,
    pub event_type: String,
    pub sender: String,
    pub ts: i64,
    /// The event as Synapse holds it now (pruned once a redaction was censored).
    pub current: Value,
    /// The event as first stored, when the history holds an earlier version (censored: the
    /// original with its content).
    pub original: Option<Value>,
    /// The redaction event that redacted this one, if any.
    pub redacted_by: Option<String>,
    /// Set when main no longer has the event (purged, room deleted): the history operation.
    pub removed: Option<String>,
    /// Synapse rejected the event (auth rules): its reason. It never took effect in the room.
    pub rejected: Option<String>,
}

impl TimelineEvent {
    /// The fullest version known: the original before censoring, else the current one.
    pub fn fullest(&self) -> &Value {
        self.original.as_ref().unwrap_or(&self.current)
    }
}

#[derive(Debug, Clone)]
pub struct Backup {
    pub version: i64,
    pub algorithm: String,
    pub auth_data: Value,
}

impl Replica {
    pub fn new(config: tokio_postgres::Config) -> Replica {
        Replica {
            config,
            client: Mutex::new(None),
        }
    }

    /// The connection, reconnecting when the last one closed (the replica restarted).
    async fn client(&self) -> Result<Arc<Client>, String> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| format!("cannot connect to the LI replica: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let c = Arc::new(client);
        *slot = Some(c.clone());
        Ok(c)
    }

    pub async fn ping(&self) -> Result<(), String> {
        let c = self.client().await?;
        c.simple_query("SELECT 1").await.map_err(db)?;
        Ok(())
    }

    /// Rooms a warrant reaches: the rooms it names, and every room a target user has a membership
    /// in, on main now or in the history (rooms since deleted).
    pub async fn rooms_for(
        &self,
        users: &[String],
        rooms: &[String],
    ) -> Result<Vec<RoomSummary>, String> {
        let c = self.client().await?;
        let mut found: BTreeMap<String, String> = BTreeMap::new();
        for r in rooms {
            found.insert(r.clone(), "named in the warrant".into());
        }
        if !users.is_empty() {
            let rows = c
                .query(
                    "SELECT room_id, user_id FROM public.room_memberships WHERE user_id = ANY($1)
                     UNION
                     SELECT old_row->>'room_id', old_row->>'user_id' FROM mxstack_li.row_history
                      WHERE table_name = 'room_memberships' AND old_row->>'user_id' = ANY($1)",
                    &[&users],
                )
                .await
                .map_err(db)?;
            for r in rows {
                let room: String = r.get(0);
                let user: String = r.get(1);
                found
                    .entry(room)
                    .or_insert_with(|| format!("{user} was a member"));
            }
        }
        let mut out = Vec::new();
        for (room_id, reason) in found {
            let state = c
                .query(
                    "SELECT c.type, ej.json FROM public.current_state_events c
                       JOIN public.event_json ej ON ej.event_id = c.event_id
                      WHERE c.room_id = $1 AND c.type IN ('m.room.name', 'm.room.encryption')
                        AND c.state_key = ''",
                    &[&room_id],
                )
                .await
                .map_err(db)?;
            let state = if state.is_empty() {
                // Main deleted the room: its last state is in the history.
                c.query(
                    "SELECT DISTINCT ON (h.old_row->>'type') h.old_row->>'type',
                            COALESCE(ej.json, (SELECT j.old_row->>'json' FROM mxstack_li.row_history j
                                                WHERE j.table_name = 'event_json'
                                                  AND j.old_row->>'event_id' = h.old_row->>'event_id'
                                                ORDER BY j.id LIMIT 1)) AS json
                       FROM mxstack_li.row_history h
                       LEFT JOIN public.event_json ej ON ej.event_id = h.old_row->>'event_id'
                      WHERE h.table_name = 'current_state_events' AND h.old_row->>'room_id' = $1
                        AND h.old_row->>'type' IN ('m.room.name', 'm.room.encryption')
                        AND h.old_row->>'state_key' = ''
                      ORDER BY h.old_row->>'type', h.id DESC",
                    &[&room_id],
                )
                .await
                .map_err(db)?
            } else {
                state
            };
            let mut name = None;
            let mut encrypted = false;
            for s in state {
                let t: String = s.get(0);
                let json: String = s.get::<_, Option<String>>(1).unwrap_or_default();
                if t == "m.room.encryption" {
                    encrypted = true;
                } else if let Ok(v) = serde_json::from_str::<Value>(&json) {
                    name = v["content"]["name"].as_str().map(str::to_string);
                }
            }
            out.push(RoomSummary {
                room_id,
                name,
                encrypted,
                reason,
            });
        }
        Ok(out)
    }

    /// The room's events with `origin_server_ts` in `[from, until)`, oldest first: those main
    /// has, and those main removed (kept in the history), each with its original JSON and the
    /// redaction that hit it.
    pub async fn timeline(
        &self,
        room_id: &str,
        from: i64,
        until: i64,
    ) -> Result<Vec<TimelineEvent>, String> {
        let c = self.client().await?;
        let mut events: Vec<TimelineEvent> = Vec::new();
        let rows = c
            .query(
                // Synapse's history purge keeps local users' and state events but turns them
                // into outliers: an outlier that was once in the timeline is shown.
                "SELECT e.event_id, e.type, e.sender, e.origin_server_ts, ej.json, e.outlier,
                        e.rejection_reason
                   FROM public.events e JOIN public.event_json ej ON ej.event_id = e.event_id
                  WHERE e.room_id = $1 AND e.origin_server_ts >= $2 AND e.origin_server_ts < $3
                    AND (NOT e.outlier OR EXISTS (
                          SELECT 1 FROM mxstack_li.row_history h
                           WHERE h.table_name = 'events' AND h.old_row->>'event_id' = e.event_id
                             AND h.old_row->>'outlier' = 'false'))
                  ORDER BY e.origin_server_ts, e.stream_ordering LIMIT $4",
                &[&room_id, &from, &until, &TIMELINE_LIMIT],
            )
            .await
            .map_err(db)?;
        for r in rows {
            let json: String = r.get(4);
            let outlier: bool = r.get(5);
            events.push(TimelineEvent {
                event_id: r.get(0),
                event_type: r.get(1),
                sender: r.get::<_, Option<String>>(2).unwrap_or_default(),
                ts: r.get::<_, Option<i64>>(3).unwrap_or_default(),
                current: serde_json::from_str(&json).unwrap_or(Value::Null),
                original: None,
                redacted_by: None,
                removed: outlier
                    .then(|| "purged from main's timeline (main keeps it as an outlier)".into()),
                rejected: r.get(6),
            });
        }
        // Events main no longer has.
        let removed = c
            .query(
                "SELECT DISTINCT ON (old_row->>'event_id') old_row->>'event_id', old_row->>'type',
                        old_row->>'sender', (old_row->>'origin_server_ts')::bigint, operation,
                        recorded_at::text
                   FROM mxstack_li.row_history
                  WHERE table_name = 'events' AND operation <> 'UPDATE'
                    AND old_row->>'room_id' = $1
                    AND (old_row->>'origin_server_ts')::bigint >= $2
                    AND (old_row->>'origin_server_ts')::bigint < $3
                    -- Only events that were once in the timeline (not auth/federation outliers).
                    AND EXISTS (SELECT 1 FROM mxstack_li.row_history t
                                 WHERE t.table_name = 'events'
                                   AND t.old_row->>'event_id' = row_history.old_row->>'event_id'
                                   AND t.old_row->>'outlier' = 'false')
                  ORDER BY old_row->>'event_id', id",
                &[&room_id, &from, &until],
            )
            .await
            .map_err(db)?;
        let present: std::collections::HashSet<String> =
            events.iter().map(|e| e.event_id.clone()).collect();
        for r in removed {
            let id: String = r.get(0);
            if present.contains(&id) {
                continue;
            }
            let op: String = r.get(4);
            let at: String = r.get(5);
            events.push(TimelineEvent {
                event_id: id,
                event_type: r.get::<_, Option<String>>(1).unwrap_or_default(),
                sender: r.get::<_, Option<String>>(2).unwrap_or_default(),
                ts: r.get::<_, Option<i64>>(3).unwrap_or_default(),
                current: Value::Null,
                original: None,
                redacted_by: None,
                removed: Some(format!("{op} on main, recorded {at}")),
                rejected: None,
            });
        }
        let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
        // The first stored JSON of every event that was rewritten (censored) or removed.
        let history = c
            .query(
                "SELECT DISTINCT ON (old_row->>'event_id') old_row->>'event_id', old_row->>'json'
                   FROM mxstack_li.row_history
                  WHERE table_name = 'event_json' AND old_row->>'event_id' = ANY($1)
                  ORDER BY old_row->>'event_id', id",
                &[&ids],
            )
            .await
            .map_err(db)?;
        let mut originals: HashMap<String, Value> = HashMap::new();
        for r in history {
            let id: String = r.get(0);
            let json: Option<String> = r.get(1);
            if let Some(v) = json.and_then(|j| serde_json::from_str(&j).ok()) {
                originals.insert(id, v);
            }
        }
        let redactions = c
            .query(
                "SELECT redacts, event_id FROM public.redactions WHERE redacts = ANY($1)
                 UNION
                 SELECT old_row->>'redacts', old_row->>'event_id' FROM mxstack_li.row_history
                  WHERE table_name = 'redactions' AND old_row->>'redacts' = ANY($1)",
                &[&ids],
            )
            .await
            .map_err(db)?;
        let mut redacted: HashMap<String, String> = HashMap::new();
        for r in redactions {
            redacted.insert(r.get(0), r.get(1));
        }
        for e in &mut events {
            if let Some(o) = originals.remove(&e.event_id) {
                if o != e.current {
                    if e.current.is_null() {
                        e.current = o;
                    } else {
                        e.original = Some(o);
                    }
                }
            }
            e.redacted_by = redacted.remove(&e.event_id);
        }
        events.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.event_id.cmp(&b.event_id)));
        Ok(events)
    }

    /// How many events main holds for the room in `[from, until)` (a timeline shows at most
    /// [`TIMELINE_LIMIT`] of them: the page and the export say so when there are more).
    pub async fn count_events(&self, room_id: &str, from: i64, until: i64) -> Result<i64, String> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT count(*) FROM public.events
                  WHERE room_id = $1 AND origin_server_ts >= $2 AND origin_server_ts < $3",
                &[&room_id, &from, &until],
            )
            .await
            .map_err(db)?;
        Ok(row.get(0))
    }

    /// The user's global account data, type -> content (secret storage lives here).
    pub async fn account_data(&self, user_id: &str) -> Result<BTreeMap<String, Value>, String> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT account_data_type, content FROM public.account_data WHERE user_id = $1",
                &[&user_id],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let t: String = r.get(0);
                let content: String = r.get(1);
                serde_json::from_str(&content).ok().map(|v| (t, v))
            })
            .collect())
    }

    /// The user's current (newest, not deleted) key backup.
    pub async fn current_backup(&self, user_id: &str) -> Result<Option<Backup>, String> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT version, algorithm, auth_data FROM public.e2e_room_keys_versions
                  WHERE user_id = $1 AND deleted = 0 ORDER BY version DESC LIMIT 1",
                &[&user_id],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| {
            let auth: String = r.get(2);
            Backup {
                version: r.get(0),
                algorithm: r.get(1),
                auth_data: serde_json::from_str(&auth).unwrap_or(Value::Null),
            }
        }))
    }

    /// The backed-up room keys of one room: (session_id, session_data), from the backup version
    /// and, for keys main has since deleted, from the history.
    pub async fn room_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: &str,
    ) -> Result<Vec<(String, Value)>, String> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT session_id, session_data FROM public.e2e_room_keys
                  WHERE user_id = $1 AND version = $2 AND room_id = $3
                 UNION
                 SELECT old_row->>'session_id', old_row->>'session_data' FROM mxstack_li.row_history
                  WHERE table_name = 'e2e_room_keys' AND old_row->>'user_id' = $1
                    AND old_row->>'room_id' = $3",
                &[&user_id, &version, &room_id],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let id: String = r.get(0);
                let data: String = r.get(1);
                serde_json::from_str(&data).ok().map(|v| (id, v))
            })
            .collect())
    }

    /// Where a remote media item is stored (`remote_content/<origin>/<filesystem_id>`).
    pub async fn remote_filesystem_id(
        &self,
        origin: &str,
        media_id: &str,
    ) -> Result<Option<String>, String> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT filesystem_id FROM public.remote_media_cache
                  WHERE media_origin = $1 AND media_id = $2",
                &[&origin, &media_id],
            )
            .await
            .map_err(db)?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// The LI bucket's key and SHA-256 (hex) of the latest copy li-sync made of a main object.
    pub async fn li_object(&self, main_key: &str) -> Result<Option<(String, String)>, String> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT li_key, sha256 FROM mxstack_li.media_objects WHERE key = $1",
                &[&main_key],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }
}

fn db(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("LI replica: {}", d.message()),
        None => format!("LI replica: {e}"),
    }
}
