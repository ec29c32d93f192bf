//! The console's state, in one SQLite file: accounts, sessions, warrants and the audit log
//! ([`crate::audit`]).
//!
//! Why it looks the way it does:
//!
//! - **Accounts** log in with a password (Argon2id, argon2's default parameters, PHC string) and
//!   a TOTP code ([`crate::totp`]). A TOTP step is single-use per account; five consecutive
//!   failures lock the account for 15 minutes, and both counters live in the database so a
//!   restart does not reset them. A failed login says only "refused" (never which factor was
//!   wrong), and an unknown username costs the same Argon2 verification as a known one. An
//!   account's username and role never change (the audit log names people by username) and
//!   accounts are disabled, never deleted.
//! - **Sessions** are 32 random bytes handed to the browser; the database holds only their
//!   SHA-256, so a copy of the file does not let anyone in. 30 minutes idle, 12 hours at most.
//! - **Warrants** are the only way to see anything. An investigator files one, a *different*
//!   person with the supervisor role approves it (four eyes, also enforced by a CHECK
//!   constraint), and it grants access only while approved, unexpired and unrevoked. Its terms
//!   never change after filing and decisions are final (triggers refuse both), and rows are never
//!   deleted: the history of who could see what, when, stays in the file.
//!
//! Store methods do not write the audit log themselves; the web layer calls
//! [`Store::audit`] with the context it has (what was shown, from which address).
//!
//! Time is always an argument (`now_ms`, unix milliseconds) so tests can move it. Calls block
//! (SQLite, and Argon2 for logins and password changes, which runs outside the connection lock):
//! async callers use `spawn_blocking`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rusqlite::{OptionalExtension, TransactionBehavior};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::totp;

/// The schema this code writes; `open` refuses a file with a newer one.
pub const SCHEMA_VERSION: i64 = 1;
/// Consecutive failed logins that lock an account.
pub const MAX_FAILED_LOGINS: i64 = 5;
/// How long a lockout lasts.
pub const LOCKOUT_MS: i64 = 15 * 60 * 1000;
/// A session ends after this long without a request.
pub const SESSION_IDLE_MS: i64 = 30 * 60 * 1000;
/// A session ends this long after login, however active.
pub const SESSION_ABSOLUTE_MS: i64 = 12 * 60 * 60 * 1000;
/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted (bounds the hashing work an attacker can ask for).
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// The issuer shown in authenticator apps.
pub const TOTP_ISSUER: &str = "mxstack LI";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);

CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('investigator', 'supervisor', 'auditor')),
    password_hash TEXT NOT NULL,
    totp_secret BLOB NOT NULL,
    totp_last_step INTEGER,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until_ms INTEGER,
    disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    disabled_ms INTEGER,
    created_ms INTEGER NOT NULL,
    password_changed_ms INTEGER NOT NULL,
    last_login_ms INTEGER
);
CREATE TRIGGER IF NOT EXISTS accounts_no_delete BEFORE DELETE ON accounts
    BEGIN SELECT RAISE(ABORT, 'mxstack li console: accounts are disabled, never deleted (DELETE refused)'); END;
CREATE TRIGGER IF NOT EXISTS accounts_identity_fixed BEFORE UPDATE ON accounts
    WHEN NEW.id IS NOT OLD.id OR NEW.username IS NOT OLD.username OR NEW.role IS NOT OLD.role
        OR NEW.created_ms IS NOT OLD.created_ms
    BEGIN SELECT RAISE(ABORT, 'mxstack li console: an account''s username and role never change (UPDATE refused)'); END;
CREATE TRIGGER IF NOT EXISTS accounts_disabled_for_good BEFORE UPDATE ON accounts
    WHEN OLD.disabled = 1 AND (NEW.disabled IS NOT 1 OR NEW.disabled_ms IS NOT OLD.disabled_ms)
    BEGIN SELECT RAISE(ABORT, 'mxstack li console: a disabled account stays disabled (UPDATE refused)'); END;

CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    csrf_token TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_account ON sessions (account_id);

CREATE TABLE IF NOT EXISTS warrants (
    id INTEGER PRIMARY KEY,
    case_ref TEXT NOT NULL,
    target_users TEXT NOT NULL,
    target_rooms TEXT NOT NULL,
    window_start_ms INTEGER NOT NULL,
    window_end_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    justification TEXT NOT NULL,
    created_by INTEGER NOT NULL REFERENCES accounts(id),
    created_ms INTEGER NOT NULL,
    decision TEXT NOT NULL DEFAULT 'pending' CHECK (decision IN ('pending', 'approved', 'rejected')),
    decided_by INTEGER REFERENCES accounts(id),
    decided_ms INTEGER,
    decision_reason TEXT,
    revoked_by INTEGER REFERENCES accounts(id),
    revoked_ms INTEGER,
    revoke_reason TEXT,
    CHECK (window_start_ms < window_end_ms),
    CHECK (decided_by IS NULL OR decided_by <> created_by),
    CHECK (revoked_ms IS NULL OR decision = 'approved')
);
CREATE TRIGGER IF NOT EXISTS warrants_no_delete BEFORE DELETE ON warrants
    BEGIN SELECT RAISE(ABORT, 'mxstack li console: warrants are never deleted (DELETE refused)'); END;
CREATE TRIGGER IF NOT EXISTS warrants_terms_fixed BEFORE UPDATE ON warrants
    WHEN NEW.id IS NOT OLD.id OR NEW.case_ref IS NOT OLD.case_ref
        OR NEW.target_users IS NOT OLD.target_users OR NEW.target_rooms IS NOT OLD.target_rooms
        OR NEW.window_start_ms IS NOT OLD.window_start_ms OR NEW.window_end_ms IS NOT OLD.window_end_ms
        OR NEW.expires_ms IS NOT OLD.expires_ms OR NEW.justification IS NOT OLD.justification
        OR NEW.created_by IS NOT OLD.created_by OR NEW.created_ms IS NOT OLD.created_ms
    BEGIN SELECT RAISE(ABORT, 'mxstack li console: the terms of a warrant never change (UPDATE refused)'); END;
CREATE TRIGGER IF NOT EXISTS warrants_decision_final BEFORE UPDATE ON warrants
    WHEN OLD.decision <> 'pending' AND (NEW.decision IS NOT OLD.decision
        OR NEW.decided_by IS NOT OLD.decided_by OR NEW.decided_ms IS NOT OLD.decided_ms
        OR NEW.decision_reason IS NOT OLD.decision_reason)
    BEGIN SELECT RAISE(ABORT, 'mxstack li console: a warrant decision is final (UPDATE refused)'); END;
CREATE TRIGGER IF NOT EXISTS warrants_revocation_final BEFORE UPDATE ON warrants
    WHEN OLD.revoked_ms IS NOT NULL AND (NEW.revoked_ms IS NOT OLD.revoked_ms
        OR NEW.revoked_by IS NOT OLD.revoked_by OR NEW.revoke_reason IS NOT OLD.revoke_reason)
    BEGIN SELECT RAISE(ABORT, 'mxstack li console: a warrant revocation is final (UPDATE refused)'); END;
";

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Files warrants, views and exports within active ones.
    Investigator,
    /// Approves, rejects and revokes warrants (never one they filed).
    Supervisor,
    /// Reads and verifies the audit log, nothing else.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Investigator => "investigator",
            Role::Supervisor => "supervisor",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "investigator" => Some(Role::Investigator),
            "supervisor" => Some(Role::Supervisor),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Role, StoreError> {
        Role::parse(s).ok_or_else(|| StoreError::InvalidRole(s.to_string()))
    }
}

/// An account as the rest of the console sees it: no password hash, no TOTP secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub id: i64,
    pub username: String,
    pub role: Role,
    pub disabled: bool,
    pub created_ms: i64,
    pub last_login_ms: Option<i64>,
    /// Set while (and after) a lockout; the account is locked while this is in the future.
    pub locked_until_ms: Option<i64>,
}

impl Account {
    pub fn is_locked(&self, now_ms: i64) -> bool {
        self.locked_until_ms.is_some_and(|u| u > now_ms)
    }
}

/// What `create_account` hands back once: the TOTP secret to enrol in an authenticator app.
/// `Debug` does not show the secret.
#[derive(Clone)]
pub struct NewAccount {
    pub id: i64,
    /// Unpadded RFC 4648 base32, for typing into an app by hand.
    pub totp_secret_base32: String,
    /// The same secret as an `otpauth://` URI, for a QR code.
    pub otpauth_uri: String,
}

impl fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewAccount")
            .field("id", &self.id)
            .field("totp_secret_base32", &"<redacted>")
            .field("otpauth_uri", &"<redacted>")
            .finish()
    }
}

/// A logged-in browser. `token` goes in the session cookie, `csrf_token` in every form.
/// `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub token: String,
    pub csrf_token: String,
    pub account_id: i64,
    pub created_ms: i64,
    /// When the session ends unless used again (idle timeout, capped by the absolute one).
    pub expires_ms: i64,
}

impl Session {
    /// Whether a submitted form carries this session's CSRF token (constant-time comparison).
    pub fn check_csrf(&self, submitted: &str) -> bool {
        self.csrf_token.len() == submitted.len()
            && bool::from(self.csrf_token.as_bytes().ct_eq(submitted.as_bytes()))
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("token", &"<redacted>")
            .field("csrf_token", &"<redacted>")
            .field("account_id", &self.account_id)
            .field("created_ms", &self.created_ms)
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

/// What an investigator files: the warrant's terms, which never change once filed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewWarrant {
    /// The authority's reference (court order number, ...).
    pub case_ref: String,
    /// Matrix user ids, `@localpart:server`.
    pub target_users: Vec<String>,
    /// Matrix room ids, `!opaque:server` (or `!` + 43 base64url characters, room version 12).
    pub target_rooms: Vec<String>,
    /// Messages sent at or after this time are covered...
    pub window_start_ms: i64,
    /// ...up to (not including) this time.
    pub window_end_ms: i64,
    /// Access ends at this time, approved or not.
    pub expires_ms: i64,
    pub justification: String,
}

/// Where a warrant stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WarrantStatus {
    /// Filed, not yet decided, not expired.
    Pending,
    /// Approved, not revoked, not expired: the only status that grants access.
    Active,
    Rejected,
    Revoked,
    /// Past `expires_ms` (approved or still pending).
    Expired,
}

impl WarrantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WarrantStatus::Pending => "pending",
            WarrantStatus::Active => "active",
            WarrantStatus::Rejected => "rejected",
            WarrantStatus::Revoked => "revoked",
            WarrantStatus::Expired => "expired",
        }
    }
}

impl fmt::Display for WarrantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A warrant with its status at the time it was read. People are named by username.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warrant {
    pub id: i64,
    /// What was filed (serialized inline, as the warrant's own fields).
    #[serde(flatten)]
    pub terms: NewWarrant,
    pub created_by: String,
    pub created_ms: i64,
    pub status: WarrantStatus,
    /// The supervisor who approved it (`None` while pending, and when rejected).
    pub approved_by: Option<String>,
    /// Who approved or rejected it, when, and (for a rejection) why.
    pub decided_by: Option<String>,
    pub decided_ms: Option<i64>,
    pub decision_reason: Option<String>,
    pub revoked_by: Option<String>,
    pub revoked_ms: Option<i64>,
    pub revoke_reason: Option<String>,
}

impl Warrant {
    /// Whether a message sent at `ts_ms` is inside the window (start inclusive, end exclusive).
    pub fn covers_time(&self, ts_ms: i64) -> bool {
        self.terms.window_start_ms <= ts_ms && ts_ms < self.terms.window_end_ms
    }

    /// Whether `user_id` is one of the target users (exact match).
    pub fn covers_user(&self, user_id: &str) -> bool {
        self.terms.target_users.iter().any(|u| u == user_id)
    }

    /// Whether `room_id` is one of the target rooms (exact match).
    pub fn covers_room(&self, room_id: &str) -> bool {
        self.terms.target_rooms.iter().any(|r| r == room_id)
    }
}

/// Errors of the store itself and of account management.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot open the console database: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{}: the database has schema version {found}, newer than this console's {supported}: use a newer console", path.display())]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("console database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("the system random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
    #[error("invalid username {0:?}: use 1 to 64 characters from a-z 0-9 . _ -")]
    InvalidUsername(String),
    #[error("invalid role {0:?}: use investigator, supervisor or auditor")]
    InvalidRole(String),
    #[error("the password is too short: use at least {MIN_PASSWORD_CHARS} characters")]
    PasswordTooShort,
    #[error("the password is too long: use at most {MAX_PASSWORD_CHARS} characters")]
    PasswordTooLong,
    #[error("the username {0:?} is taken")]
    UsernameTaken(String),
    #[error("no account with id {0}")]
    NoSuchAccount(i64),
    #[error("account {0:?} is disabled")]
    AccountDisabled(String),
}

/// Why a login failed. `Refused` is deliberately the same for an unknown user, a wrong password
/// and a wrong or reused code.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("login refused: wrong username, password or code")]
    Refused,
    #[error("too many failed logins: the account is locked until {}", fmt_utc(*until_ms))]
    Locked { until_ms: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a warrant operation was refused, or why a warrant grants no access.
#[derive(Debug, thiserror::Error)]
pub enum WarrantError {
    #[error("warrant {0} does not exist")]
    NotFound(i64),
    #[error("warrant {id} is {status}, not approved")]
    NotApproved { id: i64, status: WarrantStatus },
    #[error("warrant {id} expired at {}", fmt_utc(*expires_ms))]
    Expired { id: i64, expires_ms: i64 },
    #[error("warrant {id} was revoked at {}", fmt_utc(*revoked_ms))]
    Revoked { id: i64, revoked_ms: i64 },
    #[error("{username} is {} {role} and cannot {action}", article(*role))]
    Forbidden {
        username: String,
        role: Role,
        action: &'static str,
    },
    #[error("account {0:?} is disabled")]
    AccountDisabled(String),
    #[error(
        "warrant {id} was filed by {username}: another supervisor must approve it (four eyes)"
    )]
    OwnWarrant { id: i64, username: String },
    #[error("warrant {id} is {status}: {what}")]
    WrongStatus {
        id: i64,
        status: WarrantStatus,
        what: &'static str,
    },
    #[error("invalid warrant: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for WarrantError {
    fn from(e: rusqlite::Error) -> WarrantError {
        WarrantError::Store(StoreError::Database(e))
    }
}

impl From<rusqlite::Error> for LoginError {
    fn from(e: rusqlite::Error) -> LoginError {
        LoginError::Store(StoreError::Database(e))
    }
}

fn article(role: Role) -> &'static str {
    match role {
        Role::Auditor => "an",
        Role::Investigator | Role::Supervisor => "a",
    }
}

/// `2026-05-01 12:15:00 UTC` (operators read these in error messages).
pub use crate::time::format_ms as fmt_utc;

/// The console's database. One connection behind a mutex (SQLite serialises writers anyway);
/// cheap operations hold it briefly, Argon2 never holds it.
pub struct Store {
    conn: Mutex<rusqlite::Connection>,
    path: PathBuf,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// The columns of `accounts` that make an [`Account`], in this order.
const ACCOUNT_COLUMNS: &str =
    "id, username, role, disabled, created_ms, last_login_ms, locked_until_ms";
/// The same, qualified for a join with `accounts a`.
const ACCOUNT_COLUMNS_A: &str =
    "a.id, a.username, a.role, a.disabled, a.created_ms, a.last_login_ms, a.locked_until_ms";

fn account_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Account> {
    let role: String = r.get(2)?;
    Ok(Account {
        id: r.get(0)?,
        username: r.get(1)?,
        role: Role::parse(&role).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                2,
                rusqlite::types::Type::Text,
                format!("unknown role {role:?}").into(),
            )
        })?,
        disabled: r.get(3)?,
        created_ms: r.get(4)?,
        last_login_ms: r.get(5)?,
        locked_until_ms: r.get(6)?,
    })
}

const WARRANT_SELECT: &str = "
SELECT w.id, w.case_ref, w.target_users, w.target_rooms, w.window_start_ms, w.window_end_ms,
       w.expires_ms, w.justification, c.username, w.created_ms, w.decision, d.username,
       w.decided_ms, w.decision_reason, r.username, w.revoked_ms, w.revoke_reason, w.created_by
FROM warrants w
JOIN accounts c ON c.id = w.created_by
LEFT JOIN accounts d ON d.id = w.decided_by
LEFT JOIN accounts r ON r.id = w.revoked_by";

fn json_list(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Vec<String>> {
    let text: String = r.get(i)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn warrant_from_row(r: &rusqlite::Row<'_>, now_ms: i64) -> rusqlite::Result<Warrant> {
    let decision: String = r.get(10)?;
    let expires_ms: i64 = r.get(6)?;
    let revoked_ms: Option<i64> = r.get(15)?;
    let decided_by: Option<String> = r.get(11)?;
    Ok(Warrant {
        id: r.get(0)?,
        terms: NewWarrant {
            case_ref: r.get(1)?,
            target_users: json_list(r, 2)?,
            target_rooms: json_list(r, 3)?,
            window_start_ms: r.get(4)?,
            window_end_ms: r.get(5)?,
            expires_ms,
            justification: r.get(7)?,
        },
        created_by: r.get(8)?,
        created_ms: r.get(9)?,
        status: status_of(&decision, revoked_ms, expires_ms, now_ms),
        approved_by: decided_by.clone().filter(|_| decision == "approved"),
        decided_by,
        decided_ms: r.get(12)?,
        decision_reason: r.get(13)?,
        revoked_by: r.get(14)?,
        revoked_ms,
        revoke_reason: r.get(16)?,
    })
}

fn status_of(
    decision: &str,
    revoked_ms: Option<i64>,
    expires_ms: i64,
    now_ms: i64,
) -> WarrantStatus {
    if revoked_ms.is_some() {
        WarrantStatus::Revoked
    } else if decision == "rejected" {
        WarrantStatus::Rejected
    } else if now_ms >= expires_ms {
        WarrantStatus::Expired
    } else if decision == "approved" {
        WarrantStatus::Active
    } else {
        WarrantStatus::Pending
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(StoreError::Random)?;
    Ok(b)
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// `[a-z0-9._-]{1,64}`.
pub fn valid_username(u: &str) -> bool {
    (1..=64).contains(&u.len())
        && u.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

fn check_password(password: &str) -> Result<(), StoreError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(StoreError::PasswordTooShort);
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(StoreError::PasswordTooLong);
    }
    Ok(())
}

fn hash_password(password: &str) -> Result<String, StoreError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|e| StoreError::PasswordHash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::PasswordHash(e.to_string()))
}

fn password_matches(password: &str, phc: &str) -> Result<bool, StoreError> {
    let parsed = PasswordHash::new(phc)
        .map_err(|e| StoreError::PasswordHash(format!("stored hash unreadable: {e}")))?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

/// A hash of a random password, verified against when the username does not exist, so that
/// case takes as long as a wrong password.
fn dummy_hash() -> Result<&'static str, StoreError> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(h) = DUMMY.get() {
        return Ok(h);
    }
    let h = hash_password(&hex::encode(random_bytes::<16>()?))?;
    Ok(DUMMY.get_or_init(|| h))
}

/// The part of a Matrix id after the sigil and before the first `:`, and the server name after
/// it. Server names: hostname, IPv4 or `[IPv6]`, optional port.
fn split_matrix_id(id: &str, sigil: char) -> Option<(&str, Option<&str>)> {
    if id.len() > 255 {
        return None;
    }
    let rest = id.strip_prefix(sigil)?;
    match rest.split_once(':') {
        Some((local, server)) => Some((local, Some(server))),
        None => Some((rest, None)),
    }
}

fn valid_server_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        && !s.starts_with(['.', '-', ':'])
}

/// `@localpart:server`, localpart of printable ASCII (historical ids allow more than today's
/// `a-z0-9._=-/+`).
pub fn valid_user_id(id: &str) -> bool {
    match split_matrix_id(id, '@') {
        Some((local, Some(server))) => {
            !local.is_empty()
                && local.bytes().all(|b| b.is_ascii_graphic())
                && valid_server_name(server)
        }
        _ => false,
    }
}

/// `!opaque:server` (room versions 1 to 11) or `!` + 43 unpadded base64url characters (room
/// version 12, where the id is the create event's hash and has no server part).
pub fn valid_room_id(id: &str) -> bool {
    match split_matrix_id(id, '!') {
        Some((opaque, Some(server))) => {
            !opaque.is_empty()
                && opaque.bytes().all(|b| b.is_ascii_graphic())
                && valid_server_name(server)
        }
        Some((hash, None)) => {
            hash.len() == 43
                && hash
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }
        None => false,
    }
}

fn check_text(what: &str, s: &str, max: usize) -> Result<String, WarrantError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(WarrantError::Invalid(format!("{what} is empty")));
    }
    if t.chars().count() > max {
        return Err(WarrantError::Invalid(format!(
            "{what} is longer than {max} characters"
        )));
    }
    if t.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err(WarrantError::Invalid(format!(
            "{what} contains control characters"
        )));
    }
    Ok(t.to_string())
}

/// Trimmed, validated, de-duplicated (first occurrence kept) ids.
fn check_ids(
    what: &str,
    ids: &[String],
    valid: fn(&str) -> bool,
    shape: &str,
) -> Result<Vec<String>, WarrantError> {
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        let id = id.trim();
        if !valid(id) {
            return Err(WarrantError::Invalid(format!(
                "{what} {id:?} is not a Matrix id of the form {shape}"
            )));
        }
        if !out.iter().any(|o| o == id) {
            out.push(id.to_string());
        }
    }
    Ok(out)
}

/// Most targets (users plus rooms) one warrant may name.
pub const MAX_TARGETS: usize = 1000;

impl Store {
    /// Opens (creating if needed, mode 0600) the database and its schema. Idempotent: opening an
    /// existing file adds nothing and changes nothing.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let io_err = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        // Created 0600 before SQLite opens it: it holds TOTP secrets and the names of targets.
        // SQLite gives the -wal and -shm files the same mode.
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(io_err)?;
        }
        let mut conn = rusqlite::Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .map_err(open_err)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(open_err)?;
        tx.execute_batch(SCHEMA).map_err(open_err)?;
        tx.execute_batch(crate::audit::SCHEMA).map_err(open_err)?;
        let found: Option<i64> = tx
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .map_err(open_err)?;
        match found {
            None => {
                tx.execute(
                    "INSERT INTO schema_version (version) VALUES (?1)",
                    [SCHEMA_VERSION],
                )
                .map_err(open_err)?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::SchemaTooNew {
                    path: path.to_path_buf(),
                    found: v,
                    supported: SCHEMA_VERSION,
                })
            }
            Some(_) => {}
        }
        tx.commit().map_err(open_err)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection. A panic while it was held cannot leave a transaction open (rusqlite rolls
    /// back on drop), so a poisoned lock is safe to reuse.
    pub(crate) fn lock(&self) -> MutexGuard<'_, rusqlite::Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---------------------------------------------------------------- accounts

    /// Creates an account with a fresh TOTP secret, returned once for enrolment.
    pub fn create_account(
        &self,
        username: &str,
        password: &str,
        role: Role,
        now_ms: i64,
    ) -> Result<NewAccount, StoreError> {
        if !valid_username(username) {
            return Err(StoreError::InvalidUsername(username.to_string()));
        }
        check_password(password)?;
        if self.account_by_username(username)?.is_some() {
            return Err(StoreError::UsernameTaken(username.to_string()));
        }
        let phc = hash_password(password)?;
        let secret = totp::generate_secret().map_err(StoreError::Random)?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let taken: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM accounts WHERE username = ?1)",
            [username],
            |r| r.get(0),
        )?;
        if taken {
            return Err(StoreError::UsernameTaken(username.to_string()));
        }
        tx.execute(
            "INSERT INTO accounts (username, role, password_hash, totp_secret, created_ms, password_changed_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            rusqlite::params![username, role.as_str(), phc, &secret[..], now_ms],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(NewAccount {
            id,
            otpauth_uri: totp::otpauth_uri(TOTP_ISSUER, username, &secret),
            totp_secret_base32: totp::base32_encode(&secret),
        })
    }

    /// Replaces the password, clears failed logins and any lockout, and ends the account's
    /// sessions.
    pub fn set_password(
        &self,
        account_id: i64,
        password: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        check_password(password)?;
        if self.account(account_id)?.is_none() {
            return Err(StoreError::NoSuchAccount(account_id));
        }
        let phc = hash_password(password)?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE accounts SET password_hash = ?2, password_changed_ms = ?3, failed_logins = 0,
                 locked_until_ms = NULL
             WHERE id = ?1",
            rusqlite::params![account_id, phc, now_ms],
        )?;
        if n == 0 {
            return Err(StoreError::NoSuchAccount(account_id));
        }
        tx.execute("DELETE FROM sessions WHERE account_id = ?1", [account_id])?;
        tx.commit()?;
        Ok(())
    }

    /// Disables the account (for good: logins refused, sessions ended, warrants and audit
    /// entries kept).
    pub fn disable_account(&self, account_id: i64, now_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE accounts SET disabled = 1, disabled_ms = COALESCE(disabled_ms, ?2) WHERE id = ?1",
            rusqlite::params![account_id, now_ms],
        )?;
        if n == 0 {
            return Err(StoreError::NoSuchAccount(account_id));
        }
        tx.execute("DELETE FROM sessions WHERE account_id = ?1", [account_id])?;
        tx.commit()?;
        Ok(())
    }

    /// Every account, by username.
    pub fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY username"
        ))?;
        let rows = st.query_map([], account_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn account(&self, account_id: i64) -> Result<Option<Account>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"),
                [account_id],
                account_from_row,
            )
            .optional()?)
    }

    pub fn account_by_username(&self, username: &str) -> Result<Option<Account>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE username = ?1"),
                [username],
                account_from_row,
            )
            .optional()?)
    }

    // ---------------------------------------------------------------- login

    /// Checks password and TOTP code. On success the code's step is recorded (it cannot be used
    /// again) and failures are cleared. Every failure of a known, enabled account counts; the
    /// fifth in a row locks it for [`LOCKOUT_MS`] (that attempt already answers `Locked`).
    /// While locked, nothing is checked.
    pub fn login(
        &self,
        username: &str,
        password: &str,
        totp_code: &str,
        now_ms: i64,
    ) -> Result<Account, LoginError> {
        struct Row {
            account: Account,
            phc: String,
            secret: Vec<u8>,
        }
        let row = if valid_username(username) {
            let conn = self.lock();
            conn.query_row(
                &format!(
                    "SELECT {ACCOUNT_COLUMNS}, password_hash, totp_secret FROM accounts WHERE username = ?1"
                ),
                [username],
                |r| {
                    Ok(Row {
                        account: account_from_row(r)?,
                        phc: r.get(7)?,
                        secret: r.get(8)?,
                    })
                },
            )
            .optional()?
        } else {
            None
        };
        if let Some(until) = row
            .as_ref()
            .and_then(|r| r.account.locked_until_ms)
            .filter(|&u| u > now_ms)
        {
            return Err(LoginError::Locked { until_ms: until });
        }
        // Argon2 runs in every case, outside the connection lock.
        let password_ok = match &row {
            Some(r) => password_matches(password, &r.phc)?,
            None => {
                let _ = password_matches(password, dummy_hash()?)?;
                false
            }
        };
        let Some(Row {
            mut account,
            secret,
            ..
        }) = row
        else {
            return Err(LoginError::Refused);
        };
        if account.disabled {
            return Err(LoginError::Refused);
        }
        let now_s = u64::try_from(now_ms.div_euclid(1000)).unwrap_or(0);
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Read again inside the write transaction: a concurrent login may have used a step or
        // locked the account while Argon2 ran.
        let (failed, locked_until, last_step): (i64, Option<i64>, Option<i64>) = tx.query_row(
            "SELECT failed_logins, locked_until_ms, totp_last_step FROM accounts WHERE id = ?1",
            [account.id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        if let Some(until) = locked_until.filter(|&u| u > now_ms) {
            return Err(LoginError::Locked { until_ms: until });
        }
        let last_step = last_step.and_then(|s| u64::try_from(s).ok());
        let step = totp::verify(&secret, totp_code, now_s, last_step);
        match step.filter(|_| password_ok) {
            Some(step) => {
                tx.execute(
                    "UPDATE accounts SET failed_logins = 0, locked_until_ms = NULL,
                         totp_last_step = ?2, last_login_ms = ?3
                     WHERE id = ?1",
                    rusqlite::params![account.id, step as i64, now_ms],
                )?;
                tx.commit()?;
                account.last_login_ms = Some(now_ms);
                account.locked_until_ms = None;
                Ok(account)
            }
            None if failed + 1 >= MAX_FAILED_LOGINS => {
                let until = now_ms + LOCKOUT_MS;
                tx.execute(
                    "UPDATE accounts SET failed_logins = 0, locked_until_ms = ?2 WHERE id = ?1",
                    rusqlite::params![account.id, until],
                )?;
                tx.commit()?;
                Err(LoginError::Locked { until_ms: until })
            }
            None => {
                tx.execute(
                    "UPDATE accounts SET failed_logins = ?2 WHERE id = ?1",
                    rusqlite::params![account.id, failed + 1],
                )?;
                tx.commit()?;
                Err(LoginError::Refused)
            }
        }
    }

    // ---------------------------------------------------------------- sessions

    /// Starts a session for an enabled account (after [`Store::login`]). Also forgets sessions
    /// that have expired.
    pub fn create_session(&self, account_id: i64, now_ms: i64) -> Result<Session, StoreError> {
        let token = hex::encode(random_bytes::<32>()?);
        let csrf_token = hex::encode(random_bytes::<32>()?);
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let account: Option<(String, bool)> = tx
            .query_row(
                "SELECT username, disabled FROM accounts WHERE id = ?1",
                [account_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match account {
            None => return Err(StoreError::NoSuchAccount(account_id)),
            Some((username, true)) => return Err(StoreError::AccountDisabled(username)),
            Some(_) => {}
        }
        tx.execute(
            "DELETE FROM sessions WHERE expires_ms <= ?1 OR created_ms + ?2 <= ?1",
            rusqlite::params![now_ms, SESSION_ABSOLUTE_MS],
        )?;
        let expires_ms = now_ms + SESSION_IDLE_MS.min(SESSION_ABSOLUTE_MS);
        tx.execute(
            "INSERT INTO sessions (token_hash, account_id, csrf_token, created_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![
                token_hash(&token),
                account_id,
                csrf_token,
                now_ms,
                expires_ms
            ],
        )?;
        tx.commit()?;
        Ok(Session {
            token,
            csrf_token,
            account_id,
            created_ms: now_ms,
            expires_ms,
        })
    }

    /// The session for a cookie's token, its idle expiry pushed to `now + 30 min` (never past
    /// 12 h after login). `None` for an unknown, expired or malformed token or a disabled
    /// account; an expired session is deleted.
    pub fn session(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<Option<(Account, Session)>, StoreError> {
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let th = token_hash(token);
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = tx
            .query_row(
                &format!(
                    "SELECT {ACCOUNT_COLUMNS_A}, s.csrf_token, s.created_ms, s.expires_ms
                     FROM sessions s JOIN accounts a ON a.id = s.account_id
                     WHERE s.token_hash = ?1"
                ),
                [&th],
                |r| {
                    Ok((
                        account_from_row(r)?,
                        r.get::<_, String>(7)?,
                        r.get::<_, i64>(8)?,
                        r.get::<_, i64>(9)?,
                    ))
                },
            )
            .optional()?;
        let Some((account, csrf_token, created_ms, expires_ms)) = found else {
            return Ok(None);
        };
        let absolute_end = created_ms + SESSION_ABSOLUTE_MS;
        if account.disabled || now_ms >= expires_ms || now_ms >= absolute_end {
            tx.execute("DELETE FROM sessions WHERE token_hash = ?1", [&th])?;
            tx.commit()?;
            return Ok(None);
        }
        let expires_ms = (now_ms + SESSION_IDLE_MS).min(absolute_end);
        tx.execute(
            "UPDATE sessions SET expires_ms = ?2 WHERE token_hash = ?1",
            rusqlite::params![th, expires_ms],
        )?;
        tx.commit()?;
        let session = Session {
            token: token.to_string(),
            csrf_token,
            account_id: account.id,
            created_ms,
            expires_ms,
        };
        Ok(Some((account, session)))
    }

    /// Logs a session out (no error if it does not exist).
    pub fn end_session(&self, token: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "DELETE FROM sessions WHERE token_hash = ?1",
            [token_hash(token)],
        )?;
        Ok(())
    }

    /// Logs every session of an account out; returns how many there were.
    pub fn end_sessions_of(&self, account_id: i64) -> Result<usize, StoreError> {
        Ok(self
            .lock()
            .execute("DELETE FROM sessions WHERE account_id = ?1", [account_id])?)
    }

    // ---------------------------------------------------------------- warrants

    /// Checks, inside the transaction, that the account (as stored now, not as the caller
    /// remembers it) exists, is enabled and has `role`.
    fn acting(
        tx: &rusqlite::Transaction<'_>,
        who: &Account,
        role: Role,
        action: &'static str,
    ) -> Result<Account, WarrantError> {
        let current = tx
            .query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"),
                [who.id],
                account_from_row,
            )
            .optional()?
            .ok_or(StoreError::NoSuchAccount(who.id))?;
        if current.disabled {
            return Err(WarrantError::AccountDisabled(current.username));
        }
        if current.role != role {
            return Err(WarrantError::Forbidden {
                username: current.username,
                role: current.role,
                action,
            });
        }
        Ok(current)
    }

    /// The warrant and the id of the account that filed it.
    fn warrant_in(
        conn: &rusqlite::Connection,
        id: i64,
        now_ms: i64,
    ) -> Result<Option<(Warrant, i64)>, rusqlite::Error> {
        conn.query_row(&format!("{WARRANT_SELECT} WHERE w.id = ?1"), [id], |r| {
            Ok((warrant_from_row(r, now_ms)?, r.get(17)?))
        })
        .optional()
    }

    /// Files a warrant (investigators only); it starts pending. Ids are trimmed and de-duplicated.
    pub fn create_warrant(
        &self,
        creator: &Account,
        w: NewWarrant,
        now_ms: i64,
    ) -> Result<i64, WarrantError> {
        let case_ref = check_text("the case reference", &w.case_ref, 200)?;
        let justification = check_text("the justification", &w.justification, 20_000)?;
        let users = check_ids(
            "target user",
            &w.target_users,
            valid_user_id,
            "@localpart:server",
        )?;
        let rooms = check_ids(
            "target room",
            &w.target_rooms,
            valid_room_id,
            "!opaque:server",
        )?;
        if users.is_empty() && rooms.is_empty() {
            return Err(WarrantError::Invalid(
                "no target: name at least one user or room".to_string(),
            ));
        }
        if users.len() + rooms.len() > MAX_TARGETS {
            return Err(WarrantError::Invalid(format!(
                "more than {MAX_TARGETS} targets"
            )));
        }
        if w.window_start_ms >= w.window_end_ms {
            return Err(WarrantError::Invalid(format!(
                "the window starts ({}) at or after it ends ({})",
                fmt_utc(w.window_start_ms),
                fmt_utc(w.window_end_ms)
            )));
        }
        if w.expires_ms <= now_ms {
            return Err(WarrantError::Invalid(format!(
                "it would expire at {}, which is not in the future",
                fmt_utc(w.expires_ms)
            )));
        }
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let creator = Self::acting(&tx, creator, Role::Investigator, "file warrants")?;
        tx.execute(
            "INSERT INTO warrants (case_ref, target_users, target_rooms, window_start_ms, window_end_ms,
                 expires_ms, justification, created_by, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            rusqlite::params![
                case_ref,
                serde_json::to_string(&users).expect("strings serialise"),
                serde_json::to_string(&rooms).expect("strings serialise"),
                w.window_start_ms,
                w.window_end_ms,
                w.expires_ms,
                justification,
                creator.id,
                now_ms
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// Approves a pending, unexpired warrant (supervisors only, never the one who filed it).
    pub fn approve_warrant(
        &self,
        id: i64,
        supervisor: &Account,
        now_ms: i64,
    ) -> Result<(), WarrantError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let me = Self::acting(&tx, supervisor, Role::Supervisor, "approve warrants")?;
        let (w, creator) = Self::warrant_in(&tx, id, now_ms)?.ok_or(WarrantError::NotFound(id))?;
        if creator == me.id {
            return Err(WarrantError::OwnWarrant {
                id,
                username: me.username,
            });
        }
        match w.status {
            WarrantStatus::Pending => {}
            WarrantStatus::Expired if w.decided_ms.is_none() => {
                return Err(WarrantError::Expired {
                    id,
                    expires_ms: w.terms.expires_ms,
                })
            }
            status => {
                return Err(WarrantError::WrongStatus {
                    id,
                    status,
                    what: "only a pending warrant can be approved",
                })
            }
        }
        tx.execute(
            "UPDATE warrants SET decision = 'approved', decided_by = ?2, decided_ms = ?3 WHERE id = ?1",
            rusqlite::params![id, me.id, now_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Rejects a pending warrant (supervisors only; a reason is required).
    pub fn reject_warrant(
        &self,
        id: i64,
        supervisor: &Account,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), WarrantError> {
        let reason = check_text("the reason", reason, 20_000)?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let me = Self::acting(&tx, supervisor, Role::Supervisor, "reject warrants")?;
        let (w, creator) = Self::warrant_in(&tx, id, now_ms)?.ok_or(WarrantError::NotFound(id))?;
        if creator == me.id {
            return Err(WarrantError::OwnWarrant {
                id,
                username: me.username,
            });
        }
        if w.status != WarrantStatus::Pending {
            return Err(WarrantError::WrongStatus {
                id,
                status: w.status,
                what: "only a pending warrant can be rejected",
            });
        }
        tx.execute(
            "UPDATE warrants SET decision = 'rejected', decided_by = ?2, decided_ms = ?3,
                 decision_reason = ?4
             WHERE id = ?1",
            rusqlite::params![id, me.id, now_ms, reason],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Revokes an active warrant (supervisors only; a reason is required). Access ends at once.
    pub fn revoke_warrant(
        &self,
        id: i64,
        supervisor: &Account,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), WarrantError> {
        let reason = check_text("the reason", reason, 20_000)?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let me = Self::acting(&tx, supervisor, Role::Supervisor, "revoke warrants")?;
        let (w, _) = Self::warrant_in(&tx, id, now_ms)?.ok_or(WarrantError::NotFound(id))?;
        if w.status != WarrantStatus::Active {
            return Err(WarrantError::WrongStatus {
                id,
                status: w.status,
                what: "only an active warrant can be revoked",
            });
        }
        tx.execute(
            "UPDATE warrants SET revoked_by = ?2, revoked_ms = ?3, revoke_reason = ?4 WHERE id = ?1",
            rusqlite::params![id, me.id, now_ms, reason],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// One warrant, with its status at `now_ms`.
    pub fn warrant(&self, id: i64, now_ms: i64) -> Result<Option<Warrant>, StoreError> {
        let conn = self.lock();
        Ok(Self::warrant_in(&conn, id, now_ms)?.map(|(w, _)| w))
    }

    /// Every warrant, newest first, with its status at `now_ms`.
    pub fn warrants(&self, now_ms: i64) -> Result<Vec<Warrant>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare(&format!("{WARRANT_SELECT} ORDER BY w.id DESC"))?;
        let rows = st.query_map([], |r| warrant_from_row(r, now_ms))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The warrant if it grants access at `now_ms`, else why not. Every view calls this (and
    /// then [`Warrant::covers_time`] / `covers_user` / `covers_room` for what it shows).
    pub fn active_warrant(&self, id: i64, now_ms: i64) -> Result<Warrant, WarrantError> {
        let w = self
            .warrant(id, now_ms)?
            .ok_or(WarrantError::NotFound(id))?;
        match w.status {
            WarrantStatus::Active => Ok(w),
            WarrantStatus::Revoked => Err(WarrantError::Revoked {
                id,
                revoked_ms: w.revoked_ms.unwrap_or_default(),
            }),
            WarrantStatus::Expired => Err(WarrantError::Expired {
                id,
                expires_ms: w.terms.expires_ms,
            }),
            status @ (WarrantStatus::Pending | WarrantStatus::Rejected) => {
                Err(WarrantError::NotApproved { id, status })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["a", "alice", "alice.b_c-1", &"x".repeat(64)] {
            assert!(valid_username(ok), "{ok}");
        }
        for bad in ["", "Alice", "al ice", "al@ice", "ålice", &"x".repeat(65)] {
            assert!(!valid_username(bad), "{bad}");
        }
    }

    #[test]
    fn matrix_ids() {
        for ok in [
            "@alice:example.org",
            "@a.b=c/d:srv.example:8448",
            "@x:[::1]:8448",
        ] {
            assert!(valid_user_id(ok), "{ok}");
        }
        for bad in [
            "alice:example.org",
            "@:example.org",
            "@alice",
            "@alice:",
            "@al ice:x",
            "!r:x",
        ] {
            assert!(!valid_user_id(bad), "{bad}");
        }
        for ok in [
            "!abcDEF123:example.org",
            "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM",
        ] {
            assert!(valid_room_id(ok), "{ok}");
        }
        for bad in [
            "!:example.org",
            "!abc",
            "#alias:example.org",
            "!abc:",
            "@a:b",
            "!a b:x",
        ] {
            assert!(!valid_room_id(bad), "{bad}");
        }
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(fmt_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_utc(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(fmt_utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(fmt_utc(-1000), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn status_precedence() {
        assert_eq!(status_of("pending", None, 10, 5), WarrantStatus::Pending);
        assert_eq!(status_of("pending", None, 10, 10), WarrantStatus::Expired);
        assert_eq!(status_of("approved", None, 10, 9), WarrantStatus::Active);
        assert_eq!(status_of("approved", None, 10, 10), WarrantStatus::Expired);
        assert_eq!(
            status_of("approved", Some(3), 10, 5),
            WarrantStatus::Revoked
        );
        assert_eq!(
            status_of("approved", Some(3), 10, 50),
            WarrantStatus::Revoked
        );
        assert_eq!(status_of("rejected", None, 10, 50), WarrantStatus::Rejected);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let s = Session {
            token: "t0k3n".repeat(5),
            csrf_token: "c5rf".repeat(5),
            account_id: 1,
            created_ms: 0,
            expires_ms: 1,
        };
        let d = format!("{s:?}");
        assert!(!d.contains("t0k3n") && !d.contains("c5rf"), "{d}");
        let n = NewAccount {
            id: 1,
            totp_secret_base32: "SECRETSECRET".into(),
            otpauth_uri: "otpauth://totp/x?secret=SECRETSECRET".into(),
        };
        assert!(!format!("{n:?}").contains("SECRETSECRET"));
    }

    #[test]
    fn csrf_check() {
        let s = Session {
            token: String::new(),
            csrf_token: "abcd".into(),
            account_id: 1,
            created_ms: 0,
            expires_ms: 1,
        };
        assert!(s.check_csrf("abcd"));
        assert!(!s.check_csrf("abce"));
        assert!(!s.check_csrf("abc"));
        assert!(!s.check_csrf(""));
    }
}
