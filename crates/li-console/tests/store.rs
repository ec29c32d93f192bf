//! The console store end to end on a real SQLite file: accounts and login (Argon2id, TOTP,
//! replay, lockout), sessions, warrants (roles, four eyes, expiry, revocation, immutability) and
//! the audit chain, including what an attacker with write access to the file can and cannot hide.

use std::path::{Path, PathBuf};

use mxstack_li_console::audit::{self, AuditError, GENESIS_HASH};
use mxstack_li_console::store::{
    Account, LoginError, NewAccount, NewWarrant, Role, Store, StoreError, WarrantError,
    WarrantStatus, LOCKOUT_MS, SESSION_ABSOLUTE_MS, SESSION_IDLE_MS,
};
use mxstack_li_console::totp;
use serde_json::json;

/// 2023-11-14 22:13:25 UTC (25 s into a TOTP step).
const T0: i64 = 1_700_000_005_000;
const MIN: i64 = 60_000;
const PASSWORD: &str = "correct horse battery";

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: Store,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.sqlite");
    let store = Store::open(&path).unwrap();
    Fixture {
        _dir: dir,
        path,
        store,
    }
}

/// The secret as an authenticator app reads it from the base32 shown to the user.
fn secret(na: &NewAccount) -> Vec<u8> {
    totp_rs::Secret::Encoded(na.totp_secret_base32.clone())
        .to_bytes()
        .unwrap()
}

fn code(na: &NewAccount, now_ms: i64) -> String {
    totp::code_at(&secret(na), (now_ms / 1000) as u64)
}

/// An account, logged in once so the caller has its `Account`.
fn account(s: &Store, name: &str, role: Role) -> Account {
    let na = s.create_account(name, PASSWORD, role, T0).unwrap();
    s.login(name, PASSWORD, &code(&na, T0), T0).unwrap()
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

// ------------------------------------------------------------------------------- open / schema

#[test]
fn open_creates_a_0600_file_and_is_idempotent() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&f.path), 0o600);
    f.store
        .create_account("alice", PASSWORD, Role::Investigator, T0)
        .unwrap();
    assert_eq!(mode(&f.path.with_extension("sqlite-wal")), 0o600);
    assert_eq!(mode(&f.path.with_extension("sqlite-shm")), 0o600);
    drop(f.store);
    let again = Store::open(&f.path).unwrap();
    let again2 = Store::open(&f.path).unwrap();
    assert_eq!(again.accounts().unwrap().len(), 1);
    assert_eq!(again2.accounts().unwrap().len(), 1);
    let c = raw(&f.path);
    let versions: i64 = c
        .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(versions, 1);
    let journal: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
}

#[test]
fn open_refuses_a_newer_schema() {
    let f = fixture();
    raw(&f.path)
        .execute("INSERT INTO schema_version (version) VALUES (99)", [])
        .unwrap();
    let e = Store::open(&f.path).unwrap_err();
    assert!(
        matches!(e, StoreError::SchemaTooNew { found: 99, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("schema version 99"), "{e}");
}

// ------------------------------------------------------------------------------- accounts

#[test]
fn accounts_store_argon2id_and_never_show_secrets() {
    let f = fixture();
    let na = f
        .store
        .create_account("alice", PASSWORD, Role::Investigator, T0)
        .unwrap();
    assert_eq!(na.totp_secret_base32.len(), 32, "20 bytes in base32");
    assert_eq!(secret(&na).len(), 20);
    assert!(na
        .otpauth_uri
        .starts_with("otpauth://totp/mxstack%20LI:alice?secret="));
    assert!(na.otpauth_uri.contains(&na.totp_secret_base32));
    assert!(!format!("{na:?}").contains(&na.totp_secret_base32));

    let phc: String = raw(&f.path)
        .query_row(
            "SELECT password_hash FROM accounts WHERE username = 'alice'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");

    let list = f.store.accounts().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].username, "alice");
    assert_eq!(list[0].role, Role::Investigator);
    assert!(!list[0].disabled);
    let debug = format!("{list:?}");
    assert!(!debug.contains("argon2") && !debug.contains(&na.totp_secret_base32));
}

#[test]
fn account_creation_is_validated() {
    let f = fixture();
    let s = &f.store;
    assert!(matches!(
        s.create_account("Alice", PASSWORD, Role::Auditor, T0),
        Err(StoreError::InvalidUsername(_))
    ));
    assert!(matches!(
        s.create_account("", PASSWORD, Role::Auditor, T0),
        Err(StoreError::InvalidUsername(_))
    ));
    assert!(matches!(
        s.create_account("bob", "elevenchars", Role::Auditor, T0),
        Err(StoreError::PasswordTooShort)
    ));
    s.create_account("bob", "twelve chars", Role::Auditor, T0)
        .unwrap();
    let e = s
        .create_account("bob", PASSWORD, Role::Supervisor, T0)
        .unwrap_err();
    assert!(matches!(e, StoreError::UsernameTaken(_)), "{e}");
    assert_eq!(e.to_string(), "the username \"bob\" is taken");
    assert_eq!("supervisor".parse::<Role>().unwrap(), Role::Supervisor);
    assert!("admin".parse::<Role>().is_err());
}

// ------------------------------------------------------------------------------- login

#[test]
fn login_needs_password_and_current_code() {
    let f = fixture();
    let s = &f.store;
    let na = s
        .create_account("alice", PASSWORD, Role::Investigator, T0)
        .unwrap();
    let a = s.login("alice", PASSWORD, &code(&na, T0), T0).unwrap();
    assert_eq!(a.id, na.id);
    assert_eq!(a.last_login_ms, Some(T0));

    // Every kind of failure reads the same.
    let later = T0 + 2 * MIN;
    let wrong_password = s
        .login("alice", "wrong password!", &code(&na, later), later)
        .unwrap_err();
    let wrong_code = s.login("alice", PASSWORD, "000000", later).unwrap_err();
    let unknown = s
        .login("mallory", PASSWORD, &code(&na, later), later)
        .unwrap_err();
    let invalid_name = s
        .login("Not A Name", PASSWORD, &code(&na, later), later)
        .unwrap_err();
    for e in [&wrong_password, &wrong_code, &unknown, &invalid_name] {
        assert!(matches!(e, LoginError::Refused), "{e:?}");
        assert_eq!(
            e.to_string(),
            "login refused: wrong username, password or code"
        );
    }
}

#[test]
fn totp_codes_are_single_use_and_drift_is_one_step() {
    let f = fixture();
    let s = &f.store;
    let na = s
        .create_account("alice", PASSWORD, Role::Investigator, T0)
        .unwrap();
    let c = code(&na, T0);
    s.login("alice", PASSWORD, &c, T0).unwrap();
    // The same code again, still within its step: a replay.
    assert!(matches!(
        s.login("alice", PASSWORD, &c, T0 + 1000),
        Err(LoginError::Refused)
    ));
    // The previous step's code, now that a later step was used: refused as well.
    assert!(matches!(
        s.login("alice", PASSWORD, &code(&na, T0 - 30_000), T0 + 1000),
        Err(LoginError::Refused)
    ));
    // The next step's code (the phone's clock is 30 s ahead) is fine.
    s.login("alice", PASSWORD, &code(&na, T0 + 30_000), T0 + 2000)
        .unwrap();
    // Two steps off is not.
    let t = T0 + 10 * MIN;
    assert!(matches!(
        s.login("alice", PASSWORD, &code(&na, t - 60_000), t),
        Err(LoginError::Refused)
    ));
    // A step behind (slow phone) is.
    s.login("alice", PASSWORD, &code(&na, t - 30_000), t)
        .unwrap();
}

#[test]
fn five_failures_lock_the_account_for_fifteen_minutes_even_across_restarts() {
    let f = fixture();
    let na = f
        .store
        .create_account("alice", PASSWORD, Role::Investigator, T0)
        .unwrap();
    for i in 0..4 {
        let t = T0 + i * 1000;
        assert!(matches!(
            f.store.login("alice", "not the password", &code(&na, t), t),
            Err(LoginError::Refused)
        ));
    }
    let t5 = T0 + 5000;
    let e = f.store.login("alice", PASSWORD, "123456", t5).unwrap_err();
    assert!(
        matches!(e, LoginError::Locked { until_ms } if until_ms == t5 + LOCKOUT_MS),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("locked until 2023-11-14 22:28:30 UTC"),
        "{e}"
    );

    // A restart does not unlock it, and the right password and code do not either.
    let Fixture { _dir, path, store } = f;
    drop(store);
    let store = Store::open(&path).unwrap();
    let t = t5 + 14 * MIN;
    assert!(matches!(
        store.login("alice", PASSWORD, &code(&na, t), t),
        Err(LoginError::Locked { .. })
    ));
    assert!(store
        .account_by_username("alice")
        .unwrap()
        .unwrap()
        .is_locked(t));

    let t = t5 + LOCKOUT_MS;
    store.login("alice", PASSWORD, &code(&na, t), t).unwrap();
}

#[test]
fn a_success_resets_the_failure_count() {
    let f = fixture();
    let s = &f.store;
    let na = s
        .create_account("alice", PASSWORD, Role::Investigator, T0)
        .unwrap();
    let mut t = T0;
    for round in 0..2 {
        for _ in 0..4 {
            t += 1000;
            assert!(matches!(
                s.login("alice", "not the password", "000000", t),
                Err(LoginError::Refused)
            ));
        }
        t += 30_000 * (round + 1);
        s.login("alice", PASSWORD, &code(&na, t), t).unwrap();
    }
}

#[test]
fn set_password_and_disable_end_sessions() {
    let f = fixture();
    let s = &f.store;
    let na = s
        .create_account("alice", PASSWORD, Role::Investigator, T0)
        .unwrap();
    let sess = s.create_session(na.id, T0).unwrap();
    assert!(s.set_password(na.id, "short", T0).is_err());
    s.set_password(na.id, "a new long password", T0).unwrap();
    assert!(s.session(&sess.token, T0 + 1000).unwrap().is_none());
    let t = T0 + MIN;
    assert!(matches!(
        s.login("alice", PASSWORD, &code(&na, t), t),
        Err(LoginError::Refused)
    ));
    s.login("alice", "a new long password", &code(&na, t), t)
        .unwrap();

    let sess = s.create_session(na.id, t).unwrap();
    s.disable_account(na.id, t).unwrap();
    assert!(s.session(&sess.token, t + 1000).unwrap().is_none());
    let t = t + MIN;
    assert!(matches!(
        s.login("alice", "a new long password", &code(&na, t), t),
        Err(LoginError::Refused)
    ));
    assert!(matches!(
        s.create_session(na.id, t),
        Err(StoreError::AccountDisabled(_))
    ));
    assert!(s.account(na.id).unwrap().unwrap().disabled);
    s.disable_account(na.id, t + 1).unwrap();
    let (disabled_ms, err) = {
        let c = raw(&f.path);
        let ms: i64 = c
            .query_row(
                "SELECT disabled_ms FROM accounts WHERE id = ?1",
                [na.id],
                |r| r.get(0),
            )
            .unwrap();
        let err = c
            .execute("UPDATE accounts SET disabled = 0", [])
            .unwrap_err()
            .to_string();
        (ms, err)
    };
    assert_eq!(disabled_ms, t - MIN, "the first disabling time is kept");
    assert!(err.contains("a disabled account stays disabled"), "{err}");
    assert!(matches!(
        s.disable_account(999, t),
        Err(StoreError::NoSuchAccount(999))
    ));
}

// ------------------------------------------------------------------------------- sessions

#[test]
fn sessions_store_only_a_hash_and_expire_idle_and_absolute() {
    let f = fixture();
    let s = &f.store;
    let alice = account(s, "alice", Role::Investigator);
    let sess = s.create_session(alice.id, T0).unwrap();
    assert_eq!(sess.token.len(), 64);
    assert_eq!(sess.csrf_token.len(), 64);
    assert_ne!(sess.token, sess.csrf_token);
    assert_eq!(sess.expires_ms, T0 + SESSION_IDLE_MS);
    assert!(!format!("{sess:?}").contains(&sess.token));

    let stored: String = raw(&f.path)
        .query_row("SELECT token_hash FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_ne!(stored, sess.token);
    let bytes = std::fs::read(&f.path).unwrap();
    let wal = std::fs::read(f.path.with_extension("sqlite-wal")).unwrap_or_default();
    for hay in [&bytes, &wal] {
        assert!(!hay
            .windows(sess.token.len())
            .any(|w| w == sess.token.as_bytes()));
    }

    // Used every 29 minutes, it lives on; its idle expiry moves.
    let mut t = T0;
    for _ in 0..3 {
        t += 29 * MIN;
        let (a, got) = s.session(&sess.token, t).unwrap().unwrap();
        assert_eq!(a.id, alice.id);
        assert_eq!(got.expires_ms, t + SESSION_IDLE_MS);
        assert_eq!(got.csrf_token, sess.csrf_token);
        assert!(got.check_csrf(&sess.csrf_token));
    }
    // 30 minutes of silence end it.
    assert!(s
        .session(&sess.token, t + SESSION_IDLE_MS)
        .unwrap()
        .is_none());
    assert!(
        s.session(&sess.token, t + 1000).unwrap().is_none(),
        "deleted"
    );

    // Used every 20 minutes, it still ends 12 hours after login.
    let sess = s.create_session(alice.id, T0).unwrap();
    let mut t = T0;
    while t + 20 * MIN < T0 + SESSION_ABSOLUTE_MS {
        t += 20 * MIN;
        let (_, got) = s.session(&sess.token, t).unwrap().unwrap();
        assert!(got.expires_ms <= T0 + SESSION_ABSOLUTE_MS);
    }
    assert!(s
        .session(&sess.token, T0 + SESSION_ABSOLUTE_MS)
        .unwrap()
        .is_none());

    // Logout, and nonsense tokens.
    let sess = s.create_session(alice.id, T0).unwrap();
    s.end_session(&sess.token).unwrap();
    assert!(s.session(&sess.token, T0 + 1).unwrap().is_none());
    for bad in ["", "abc", &"z".repeat(64), &stored] {
        assert!(s.session(bad, T0).unwrap().is_none(), "{bad}");
    }
    let a = s.create_session(alice.id, T0).unwrap();
    let b = s.create_session(alice.id, T0).unwrap();
    assert_eq!(s.end_sessions_of(alice.id).unwrap(), 2);
    assert!(s.session(&a.token, T0).unwrap().is_none());
    assert!(s.session(&b.token, T0).unwrap().is_none());
}

// ------------------------------------------------------------------------------- warrants

struct People {
    ivan: Account,
    sue: Account,
    sam: Account,
    audrey: Account,
}

fn people(s: &Store) -> People {
    People {
        ivan: account(s, "ivan", Role::Investigator),
        sue: account(s, "sue", Role::Supervisor),
        sam: account(s, "sam", Role::Supervisor),
        audrey: account(s, "audrey", Role::Auditor),
    }
}

fn new_warrant() -> NewWarrant {
    NewWarrant {
        case_ref: "AG-2023-0042".into(),
        target_users: vec!["@target:example.org".into(), " @target:example.org ".into()],
        target_rooms: vec!["!room1:example.org".into()],
        window_start_ms: T0 - 7 * 24 * 60 * MIN,
        window_end_ms: T0 + 7 * 24 * 60 * MIN,
        expires_ms: T0 + 24 * 60 * MIN,
        justification: "Court order 42 of 13 November 2023".into(),
    }
}

#[test]
fn warrant_lifecycle_with_four_eyes() {
    let f = fixture();
    let s = &f.store;
    let p = people(s);
    let id = s.create_warrant(&p.ivan, new_warrant(), T0).unwrap();
    let w = s.warrant(id, T0).unwrap().unwrap();
    assert_eq!(w.status, WarrantStatus::Pending);
    assert_eq!(
        w.terms.target_users,
        ["@target:example.org"],
        "trimmed, deduplicated"
    );
    assert_eq!(w.created_by, "ivan");
    assert_eq!(w.approved_by, None);
    assert!(matches!(
        s.active_warrant(id, T0),
        Err(WarrantError::NotApproved {
            status: WarrantStatus::Pending,
            ..
        })
    ));

    // Only supervisors decide.
    for who in [&p.ivan, &p.audrey] {
        let e = s.approve_warrant(id, who, T0).unwrap_err();
        assert!(matches!(e, WarrantError::Forbidden { .. }), "{e}");
    }
    assert_eq!(
        s.approve_warrant(id, &p.audrey, T0)
            .unwrap_err()
            .to_string(),
        "audrey is an auditor and cannot approve warrants"
    );

    let t = T0 + MIN;
    s.approve_warrant(id, &p.sue, t).unwrap();
    let w = s.active_warrant(id, t).unwrap();
    assert_eq!(w.status, WarrantStatus::Active);
    assert_eq!(w.approved_by.as_deref(), Some("sue"));
    assert_eq!(w.decided_ms, Some(t));
    assert!(w.covers_user("@target:example.org"));
    assert!(!w.covers_user("@other:example.org"));
    assert!(w.covers_room("!room1:example.org"));
    assert!(!w.covers_room("!room2:example.org"));
    assert!(w.covers_time(w.terms.window_start_ms));
    assert!(w.covers_time(w.terms.window_end_ms - 1));
    assert!(!w.covers_time(w.terms.window_end_ms));
    assert!(!w.covers_time(w.terms.window_start_ms - 1));

    // A decision is final.
    let e = s.approve_warrant(id, &p.sam, t).unwrap_err();
    assert!(
        matches!(
            e,
            WarrantError::WrongStatus {
                status: WarrantStatus::Active,
                ..
            }
        ),
        "{e}"
    );
    let e = s
        .reject_warrant(id, &p.sam, "changed my mind", t)
        .unwrap_err();
    assert!(matches!(e, WarrantError::WrongStatus { .. }), "{e}");

    // Revocation ends access at once.
    assert!(
        s.revoke_warrant(id, &p.sam, "  ", t).is_err(),
        "needs a reason"
    );
    assert!(matches!(
        s.revoke_warrant(id, &p.ivan, "x", t),
        Err(WarrantError::Forbidden { .. })
    ));
    s.revoke_warrant(id, &p.sam, "case closed", t + MIN)
        .unwrap();
    let e = s.active_warrant(id, t + MIN).unwrap_err();
    assert!(
        matches!(e, WarrantError::Revoked { revoked_ms, .. } if revoked_ms == t + MIN),
        "{e}"
    );
    let w = s.warrant(id, t + MIN).unwrap().unwrap();
    assert_eq!(w.status, WarrantStatus::Revoked);
    assert_eq!(w.revoked_by.as_deref(), Some("sam"));
    assert_eq!(w.revoke_reason.as_deref(), Some("case closed"));
    assert!(matches!(
        s.revoke_warrant(id, &p.sam, "again", t + MIN),
        Err(WarrantError::WrongStatus {
            status: WarrantStatus::Revoked,
            ..
        })
    ));
}

#[test]
fn the_creator_can_never_approve_their_own_warrant() {
    // Roles already keep investigators from approving; the database refuses it as well, so a
    // future role change or a bug cannot produce a one-person approval.
    let f = fixture();
    let s = &f.store;
    let p = people(s);
    let id = s.create_warrant(&p.ivan, new_warrant(), T0).unwrap();
    let e = s.approve_warrant(id, &p.ivan, T0).unwrap_err();
    assert!(matches!(e, WarrantError::Forbidden { .. }), "{e}");
    let c = raw(&f.path);
    let err = c
        .execute(
            "UPDATE warrants SET decision = 'approved', decided_by = created_by, decided_ms = 1 WHERE id = ?1",
            [id],
        )
        .unwrap_err();
    assert!(err.to_string().contains("CHECK constraint failed"), "{err}");
}

#[test]
fn rejection_and_expiry() {
    let f = fixture();
    let s = &f.store;
    let p = people(s);

    let rejected = s.create_warrant(&p.ivan, new_warrant(), T0).unwrap();
    s.reject_warrant(rejected, &p.sue, "no court order attached", T0)
        .unwrap();
    let w = s.warrant(rejected, T0).unwrap().unwrap();
    assert_eq!(w.status, WarrantStatus::Rejected);
    assert_eq!(w.decided_by.as_deref(), Some("sue"));
    assert_eq!(w.approved_by, None);
    assert_eq!(
        w.decision_reason.as_deref(),
        Some("no court order attached")
    );
    assert!(matches!(
        s.approve_warrant(rejected, &p.sam, T0),
        Err(WarrantError::WrongStatus {
            status: WarrantStatus::Rejected,
            ..
        })
    ));
    assert!(matches!(
        s.active_warrant(rejected, T0),
        Err(WarrantError::NotApproved {
            status: WarrantStatus::Rejected,
            ..
        })
    ));

    // A pending warrant that expired cannot be approved any more.
    let stale = s.create_warrant(&p.ivan, new_warrant(), T0).unwrap();
    let after = new_warrant().expires_ms;
    let e = s.approve_warrant(stale, &p.sue, after).unwrap_err();
    assert!(matches!(e, WarrantError::Expired { .. }), "{e}");
    assert_eq!(
        s.warrant(stale, after).unwrap().unwrap().status,
        WarrantStatus::Expired
    );

    // An approved warrant stops granting access at expires_ms.
    let ok = s.create_warrant(&p.ivan, new_warrant(), T0).unwrap();
    s.approve_warrant(ok, &p.sue, T0).unwrap();
    s.active_warrant(ok, after - 1).unwrap();
    let e = s.active_warrant(ok, after).unwrap_err();
    assert!(matches!(e, WarrantError::Expired { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("warrant {ok} expired at 2023-11-15 22:13:25 UTC")),
        "{e}"
    );
    assert!(matches!(
        s.revoke_warrant(ok, &p.sue, "late", after),
        Err(WarrantError::WrongStatus {
            status: WarrantStatus::Expired,
            ..
        })
    ));

    assert!(matches!(
        s.active_warrant(999, T0),
        Err(WarrantError::NotFound(999))
    ));
    assert!(s.warrant(999, T0).unwrap().is_none());

    let all = s.warrants(T0).unwrap();
    assert_eq!(
        all.iter().map(|w| (w.id, w.status)).collect::<Vec<_>>(),
        [
            (ok, WarrantStatus::Active),
            (stale, WarrantStatus::Pending),
            (rejected, WarrantStatus::Rejected)
        ]
    );
    let statuses: Vec<_> = s
        .warrants(after)
        .unwrap()
        .iter()
        .map(|w| w.status)
        .collect();
    assert_eq!(
        statuses,
        [
            WarrantStatus::Expired,
            WarrantStatus::Expired,
            WarrantStatus::Rejected
        ]
    );
}

#[test]
fn warrants_are_validated() {
    let f = fixture();
    let s = &f.store;
    let p = people(s);
    let bad = |w: NewWarrant| -> String {
        match s.create_warrant(&p.ivan, w, T0) {
            Err(WarrantError::Invalid(m)) => m,
            other => panic!("{other:?}"),
        }
    };
    let mut w = new_warrant();
    w.target_users.clear();
    w.target_rooms.clear();
    assert!(bad(w).contains("no target"));
    let mut w = new_warrant();
    w.target_users = vec!["target@example.org".into()];
    assert!(bad(w).contains("@localpart:server"));
    let mut w = new_warrant();
    w.target_rooms = vec!["#alias:example.org".into()];
    assert!(bad(w).contains("!opaque:server"));
    let mut w = new_warrant();
    w.window_end_ms = w.window_start_ms;
    assert!(bad(w).contains("window"));
    let mut w = new_warrant();
    w.expires_ms = T0;
    assert!(bad(w).contains("not in the future"));
    let mut w = new_warrant();
    w.case_ref = " ".into();
    assert!(bad(w).contains("case reference"));
    let mut w = new_warrant();
    w.justification = String::new();
    assert!(bad(w).contains("justification"));

    // Rooms only, including a room version 12 id, are fine.
    let mut w = new_warrant();
    w.target_users.clear();
    w.target_rooms = vec!["!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM".into()];
    s.create_warrant(&p.ivan, w, T0).unwrap();

    for who in [&p.sue, &p.audrey] {
        assert!(matches!(
            s.create_warrant(who, new_warrant(), T0),
            Err(WarrantError::Forbidden { .. })
        ));
    }
    s.disable_account(p.ivan.id, T0).unwrap();
    assert!(matches!(
        s.create_warrant(&p.ivan, new_warrant(), T0),
        Err(WarrantError::AccountDisabled(_))
    ));
}

#[test]
fn the_database_refuses_deleting_or_rewriting_warrants_and_accounts() {
    let f = fixture();
    let s = &f.store;
    let p = people(s);
    let id = s.create_warrant(&p.ivan, new_warrant(), T0).unwrap();
    s.approve_warrant(id, &p.sue, T0).unwrap();
    let c = raw(&f.path);
    let refused = |sql: &str, needle: &str| {
        let e = c.execute(sql, []).unwrap_err().to_string();
        assert!(e.contains(needle), "{sql}: {e}");
    };
    refused("DELETE FROM warrants", "never deleted");
    refused(
        "UPDATE warrants SET expires_ms = expires_ms + 1",
        "terms of a warrant never change",
    );
    refused(
        "UPDATE warrants SET target_users = '[\"@other:example.org\"]'",
        "terms of a warrant never change",
    );
    refused(
        "UPDATE warrants SET decision = 'pending', decided_by = NULL",
        "decision is final",
    );
    refused("DELETE FROM accounts", "never deleted");
    refused(
        "UPDATE accounts SET role = 'supervisor' WHERE username = 'ivan'",
        "username and role never change",
    );
    s.revoke_warrant(id, &p.sam, "done", T0).unwrap();
    refused(
        "UPDATE warrants SET revoked_ms = NULL, revoked_by = NULL",
        "revocation is final",
    );
    assert_eq!(
        s.warrant(id, T0).unwrap().unwrap().status,
        WarrantStatus::Revoked
    );
}

// ------------------------------------------------------------------------------- audit log

/// `n` entries at one-second intervals.
fn fill(s: &Store, n: i64) {
    for i in 0..n {
        s.audit(
            Some(if i % 2 == 0 { "ivan" } else { "sue" }),
            "view.timeline",
            &format!("warrant {}", i % 7),
            &json!({"room_id": "!room1:example.org", "i": i, "events": [i, i + 1]}),
            T0 + i * 1000,
        )
        .unwrap();
    }
}

/// What an attacker with write access to the file does first.
fn attacker(path: &Path) -> rusqlite::Connection {
    let c = raw(path);
    c.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;")
        .unwrap();
    c
}

#[test]
fn a_clean_chain_of_100_entries_verifies() {
    let f = fixture();
    fill(&f.store, 100);
    let report = audit::verify(&f.path, None).unwrap();
    assert_eq!(report.rows, 100);
    assert_eq!(report.first_at_ms, Some(T0));
    assert_eq!(report.last_at_ms, Some(T0 + 99_000));
    let (seq, head) = f.store.audit_head().unwrap();
    assert_eq!((seq, &head), (100, &report.head_hash));
    // With the head anchored (as Loki has it).
    assert_eq!(audit::verify(&f.path, Some(&head)).unwrap(), report);
    assert_eq!(
        audit::verify(&f.path, Some(&head.to_uppercase())).unwrap(),
        report
    );
    assert_eq!(f.store.verify_audit(None).unwrap(), report);

    // Entries link up and page in order.
    let first = f.store.audit_entries(0, 10).unwrap();
    assert_eq!(first.len(), 10);
    assert_eq!(first[0].seq, 1);
    assert_eq!(first[0].prev_hash, GENESIS_HASH);
    for pair in first.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert_eq!(pair[1].computed_hash(), pair[1].hash);
    }
    let next = f.store.audit_entries(10, 1000).unwrap();
    assert_eq!(next.len(), 90);
    assert_eq!(next[0].prev_hash, first[9].hash);
    let recent = f.store.recent_audit_entries(3).unwrap();
    assert_eq!(
        recent.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [100, 99, 98]
    );
    assert_eq!(first[0].actor.as_deref(), Some("ivan"));
    assert_eq!(
        first[0].details,
        r#"{"events":[0,1],"i":0,"room_id":"!room1:example.org"}"#
    );
    assert_eq!(first[0].details_json()["i"], 0);

    // Still verifies after the store is closed (read-only open of a WAL file).
    let Fixture { _dir, path, store } = f;
    drop(store);
    assert_eq!(audit::verify(&path, None).unwrap().rows, 100);
}

#[test]
fn an_empty_log_verifies() {
    let f = fixture();
    let r = audit::verify(&f.path, None).unwrap();
    assert_eq!(r.rows, 0);
    assert_eq!(r.head_hash, GENESIS_HASH);
    assert_eq!(r.first_at_ms, None);
    assert_eq!(f.store.audit_head().unwrap(), (0, GENESIS_HASH.to_string()));
}

#[test]
fn details_are_canonical_and_system_entries_have_no_actor() {
    let f = fixture();
    let a = f
        .store
        .audit(
            None,
            "startup",
            "console",
            &json!({"b": 1, "a": [true, null]}),
            T0,
        )
        .unwrap();
    let b = f
        .store
        .audit(
            None,
            "startup",
            "console",
            &json!({"a": [true, null], "b": 1}),
            T0,
        )
        .unwrap();
    assert_eq!(a.details, r#"{"a":[true,null],"b":1}"#);
    assert_eq!(a.details, b.details);
    assert_eq!(a.actor, None);
    assert_eq!(b.prev_hash, a.hash);
    assert!(matches!(
        f.store.audit(None, " ", "x", &json!({}), T0),
        Err(AuditError::Invalid(_))
    ));
    audit::verify(&f.path, None).unwrap();
}

#[test]
fn triggers_refuse_update_and_delete_of_the_log() {
    let f = fixture();
    fill(&f.store, 3);
    let c = raw(&f.path);
    for sql in [
        "UPDATE audit_log SET details = '{}' WHERE seq = 2",
        "DELETE FROM audit_log WHERE seq = 3",
    ] {
        let e = c.execute(sql, []).unwrap_err().to_string();
        assert!(e.contains("audit_log is append-only"), "{e}");
    }
    assert_eq!(audit::verify(&f.path, None).unwrap().rows, 3);
}

#[test]
fn a_changed_row_is_named() {
    let f = fixture();
    fill(&f.store, 30);
    attacker(&f.path)
        .execute(
            "UPDATE audit_log SET details = '{\"room_id\":\"!elsewhere:example.org\"}' WHERE seq = 17",
            [],
        )
        .unwrap();
    let e = audit::verify(&f.path, None).unwrap_err();
    assert!(matches!(e, AuditError::HashMismatch { seq: 17 }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "hash mismatch at seq 17: the row was changed"
    );
    assert!(f.store.verify_audit(None).is_err());
}

#[test]
fn changed_actor_time_or_type_is_named() {
    let f = fixture();
    fill(&f.store, 10);
    let c = attacker(&f.path);
    c.execute("UPDATE audit_log SET actor = NULL WHERE seq = 3", [])
        .unwrap();
    assert!(matches!(
        audit::verify(&f.path, None),
        Err(AuditError::HashMismatch { seq: 3 })
    ));
    c.execute("UPDATE audit_log SET actor = 'ivan' WHERE seq = 3", [])
        .unwrap();
    audit::verify(&f.path, None).unwrap();
    c.execute("UPDATE audit_log SET at_ms = at_ms + 1 WHERE seq = 5", [])
        .unwrap();
    assert!(matches!(
        audit::verify(&f.path, None),
        Err(AuditError::HashMismatch { seq: 5 })
    ));
    c.execute("UPDATE audit_log SET at_ms = 'yesterday' WHERE seq = 5", [])
        .unwrap();
    let e = audit::verify(&f.path, None).unwrap_err();
    assert!(matches!(e, AuditError::Malformed { seq: 5, .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("seq 5 is malformed (column at_ms"),
        "{e}"
    );
}

#[test]
fn a_deleted_row_is_named() {
    let f = fixture();
    fill(&f.store, 30);
    let c = attacker(&f.path);
    c.execute("DELETE FROM audit_log WHERE seq = 9", [])
        .unwrap();
    let e = audit::verify(&f.path, None).unwrap_err();
    assert!(matches!(e, AuditError::Missing { from: 9, to: 9 }), "{e:?}");
    assert_eq!(e.to_string(), "seq 9 missing: a row was deleted");

    c.execute("DELETE FROM audit_log WHERE seq IN (10, 11)", [])
        .unwrap();
    assert_eq!(
        audit::verify(&f.path, None).unwrap_err().to_string(),
        "seq 9 to 11 missing: 3 rows were deleted"
    );

    let f = fixture();
    fill(&f.store, 5);
    attacker(&f.path)
        .execute("DELETE FROM audit_log WHERE seq = 1", [])
        .unwrap();
    assert_eq!(
        audit::verify(&f.path, None).unwrap_err().to_string(),
        "seq 1 missing: a row was deleted"
    );
}

#[test]
fn a_changed_and_rehashed_row_breaks_the_next_link() {
    let f = fixture();
    fill(&f.store, 30);
    let c = attacker(&f.path);
    let e = f.store.audit_entries(9, 1).unwrap().remove(0);
    assert_eq!(e.seq, 10);
    let forged_details = r#"{"room_id":"!nothing-to-see:example.org"}"#;
    let forged = audit::entry_hash(
        e.seq,
        e.at_ms,
        e.actor.as_deref(),
        &e.action,
        &e.subject,
        forged_details,
        &e.prev_hash,
    );
    c.execute(
        "UPDATE audit_log SET details = ?1, hash = ?2 WHERE seq = 10",
        [forged_details, &forged],
    )
    .unwrap();
    let err = audit::verify(&f.path, None).unwrap_err();
    assert!(matches!(err, AuditError::BrokenLink { seq: 11 }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("prev_hash of seq 11 does not match seq 10"),
        "{err}"
    );

    // Changing seq 1 and re-hashing it against a made-up predecessor is caught too.
    let f = fixture();
    fill(&f.store, 3);
    let e = f.store.audit_entries(0, 1).unwrap().remove(0);
    let fake_prev = "11".repeat(32);
    let forged = audit::entry_hash(
        1,
        e.at_ms,
        e.actor.as_deref(),
        &e.action,
        &e.subject,
        &e.details,
        &fake_prev,
    );
    attacker(&f.path)
        .execute(
            "UPDATE audit_log SET prev_hash = ?1, hash = ?2 WHERE seq = 1",
            [&fake_prev, &forged],
        )
        .unwrap();
    assert!(matches!(
        audit::verify(&f.path, None),
        Err(AuditError::BadGenesis)
    ));
}

#[test]
fn tail_truncation_needs_the_anchored_head() {
    let f = fixture();
    fill(&f.store, 20);
    let (_, head) = f.store.audit_head().unwrap();
    let seq17 = f.store.audit_entries(16, 1).unwrap().remove(0).hash;
    attacker(&f.path)
        .execute("DELETE FROM audit_log WHERE seq > 17", [])
        .unwrap();
    // Without the anchor the shorter chain is valid: that is the documented limit.
    let r = audit::verify(&f.path, None).unwrap();
    assert_eq!(r.rows, 17);
    assert_eq!(r.head_hash, seq17);
    // With it, the truncation shows.
    let e = audit::verify(&f.path, Some(&head)).unwrap_err();
    assert!(
        matches!(
            &e,
            AuditError::HeadMismatch {
                last_seq: 17,
                expected_seq: None,
                ..
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "the log ends at seq 17 with hash {seq17}, expected {head}"
        )),
        "{msg}"
    );
    assert!(msg.contains("rows were removed from the end"), "{msg}");
}

#[test]
fn an_old_anchor_reports_how_far_the_log_moved_on() {
    let f = fixture();
    fill(&f.store, 5);
    let (_, anchor) = f.store.audit_head().unwrap();
    fill(&f.store, 3);
    let e = audit::verify(&f.path, Some(&anchor)).unwrap_err();
    assert!(
        matches!(
            e,
            AuditError::HeadMismatch {
                last_seq: 8,
                expected_seq: Some(5),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("3 rows were appended after that anchor"),
        "{e}"
    );
    // An empty log with an anchor: everything was removed.
    let g = fixture();
    let e = audit::verify(&g.path, Some(&anchor)).unwrap_err();
    assert!(
        matches!(e, AuditError::HeadMismatch { last_seq: 0, .. }),
        "{e:?}"
    );
}

#[test]
fn concurrent_appends_from_two_connections_never_fork_the_chain() {
    let f = fixture();
    let other = Store::open(&f.path).unwrap();
    std::thread::scope(|scope| {
        for (k, store) in [&f.store, &other, &f.store, &other].into_iter().enumerate() {
            scope.spawn(move || {
                for i in 0..25 {
                    store
                        .audit(
                            Some("ivan"),
                            "view.timeline",
                            &format!("thread {k}"),
                            &json!({"i": i}),
                            T0 + i,
                        )
                        .unwrap();
                }
            });
        }
    });
    let r = audit::verify(&f.path, None).unwrap();
    assert_eq!(r.rows, 100);
}

#[test]
fn verify_reports_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = audit::verify(&dir.path().join("nope.sqlite"), None).unwrap_err();
    assert!(matches!(e, AuditError::Open { .. }), "{e:?}");
    assert!(e.to_string().contains("nope.sqlite"), "{e}");
    assert!(
        !dir.path().join("nope.sqlite").exists(),
        "verify must not create it"
    );
}
