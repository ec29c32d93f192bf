//! Cross-implementation check of `e2ee`: `fixtures/e2ee.json` was made by
//! `fixtures/make_e2ee_fixture.py` with vodozemac's Python bindings (Element's crypto) and the
//! spec's secret storage, and is decrypted here only through the public API, as the console
//! does with rows from the LI replica.

use std::collections::BTreeMap;

use mxstack_li_console::e2ee::{
    backup_decryption_key, BackupKey, EscrowedKind, RoomKeys, Undecryptable,
};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/e2ee.json")).expect("fixture is JSON")
}

fn account_data(f: &Value) -> BTreeMap<String, Value> {
    f["account_data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("fixture: no {field}"))
}

/// The whole chain from an escrowed key: checks the key against the backup and imports every
/// backed-up session.
fn room_keys(f: &Value, kind: EscrowedKind, escrowed: &str) -> (BackupKey, RoomKeys) {
    let key = backup_decryption_key(kind, escrowed, &account_data(f)).unwrap();
    let version = &f["backup_version"];
    assert_eq!(key.public_key(), s(&version["auth_data"], "public_key"));
    key.check_backup(s(version, "algorithm"), &version["auth_data"])
        .unwrap();
    let mut keys = RoomKeys::new();
    for row in f["e2e_room_keys"].as_array().unwrap() {
        let room_key = key.decrypt_session(&row["session_data"]).unwrap();
        assert_eq!(room_key.algorithm, "m.megolm.v1.aes-sha2");
        assert_eq!(room_key.sender_key, s(f, "sender_key"));
        assert!(room_key.sender_claimed_keys["ed25519"].is_string());
        assert!(room_key.forwarding_curve25519_key_chain.is_empty());
        keys.add(s(row, "room_id"), s(row, "session_id"), &room_key)
            .unwrap();
        assert_eq!(
            keys.first_known_index(s(row, "room_id"), s(row, "session_id")),
            Some(row["first_message_index"].as_u64().unwrap() as u32)
        );
    }
    assert_eq!(keys.len(), 2);
    (key, keys)
}

/// Decrypts every event and compares with what the generator recorded; returns how many
/// events gave each outcome.
fn check_events(f: &Value, keys: &mut RoomKeys) -> BTreeMap<String, usize> {
    let mut outcomes = BTreeMap::new();
    for (i, e) in f["events"].as_array().unwrap().iter().enumerate() {
        let expect = &e["expect"];
        let got = keys.decrypt(s(e, "room_id"), &e["content"]);
        let outcome = match expect.get("error").and_then(Value::as_str) {
            None => {
                let d = got.unwrap_or_else(|err| panic!("event {i}: {err}"));
                assert_eq!(d.event, expect["plaintext"], "event {i}");
                assert_eq!(
                    u64::from(d.message_index),
                    expect["message_index"].as_u64().unwrap()
                );
                assert_eq!(d.session_id, s(expect, "session_id"));
                assert_eq!(d.sender_key, s(f, "sender_key"));
                "decrypted"
            }
            Some("NoRoomKey") => {
                assert_eq!(
                    got.unwrap_err(),
                    Undecryptable::NoRoomKey {
                        session_id: s(expect, "session_id").to_owned()
                    },
                    "event {i}"
                );
                "NoRoomKey"
            }
            Some("UnknownMessageIndex") => {
                assert_eq!(
                    got.unwrap_err(),
                    Undecryptable::UnknownMessageIndex {
                        session_id: s(expect, "session_id").to_owned(),
                        first_known: expect["first_known"].as_u64().unwrap() as u32,
                        message_index: expect["message_index"].as_u64().unwrap() as u32,
                    },
                    "event {i}"
                );
                "UnknownMessageIndex"
            }
            Some("RoomMismatch") => {
                assert_eq!(got.unwrap_err(), Undecryptable::RoomMismatch, "event {i}");
                "RoomMismatch"
            }
            Some(other) => panic!("fixture: unknown expectation {other}"),
        };
        *outcomes.entry(outcome.to_owned()).or_insert(0) += 1;
    }
    outcomes
}

fn expected_outcomes() -> BTreeMap<String, usize> {
    BTreeMap::from([
        ("decrypted".to_owned(), 4),
        ("NoRoomKey".to_owned(), 1),
        ("UnknownMessageIndex".to_owned(), 2),
        ("RoomMismatch".to_owned(), 1),
    ])
}

#[test]
fn decrypts_from_the_recovery_key() {
    let f = fixture();
    let (_, mut keys) = room_keys(&f, EscrowedKind::RecoveryKey, s(&f, "recovery_key"));
    assert_eq!(check_events(&f, &mut keys), expected_outcomes());
    // Typed without the spaces, as an investigator might paste it.
    let compact = s(&f, "recovery_key").replace(' ', "");
    let (_, mut keys) = room_keys(&f, EscrowedKind::RecoveryKey, &compact);
    assert_eq!(check_events(&f, &mut keys), expected_outcomes());
}

#[test]
fn decrypts_from_the_backup_key() {
    let f = fixture();
    let kind: EscrowedKind = "backup_key".parse().unwrap();
    let (_, mut keys) = room_keys(&f, kind, s(&f, "backup_key"));
    assert_eq!(check_events(&f, &mut keys), expected_outcomes());
}

#[test]
fn missing_session_names_the_session() {
    let f = fixture();
    let (_, mut keys) = room_keys(&f, EscrowedKind::BackupKey, s(&f, "backup_key"));
    let missing = f["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["expect"]["error"] == "NoRoomKey")
        .unwrap();
    let session_id = s(&missing["expect"], "session_id");
    let err = keys
        .decrypt(s(missing, "room_id"), &missing["content"])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no room key for session {session_id} in the target's key backup")
    );
}

#[test]
fn wrong_recovery_key_is_refused_by_secret_storage() {
    let f = fixture();
    let data = account_data(&f);
    let err = backup_decryption_key(
        EscrowedKind::RecoveryKey,
        s(&f, "wrong_recovery_key"),
        &data,
    )
    .unwrap_err();
    assert_eq!(err, Undecryptable::SecretStorageMacMismatch);
    let text = format!("{err} {err:?}");
    assert!(!text.contains(s(&f, "wrong_recovery_key")), "{text}");

    // A mistyped character: caught by the recovery key's own parity/format checks.
    let good = s(&f, "recovery_key");
    let typo: String = good
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 10 {
                if c == 'x' {
                    'y'
                } else {
                    'x'
                }
            } else {
                c
            }
        })
        .collect();
    assert!(matches!(
        backup_decryption_key(EscrowedKind::RecoveryKey, &typo, &data),
        Err(Undecryptable::BadRecoveryKey(_))
    ));
    assert_eq!(
        backup_decryption_key(EscrowedKind::RecoveryKey, "", &data).unwrap_err(),
        Undecryptable::NoEscrowedKey
    );
}

#[test]
fn another_backup_key_matches_nothing() {
    let f = fixture();
    // A valid key, but not this backup's (the escrow predates a backup reset).
    let other = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA";
    let key = backup_decryption_key(EscrowedKind::BackupKey, other, &BTreeMap::new()).unwrap();
    let version = &f["backup_version"];
    assert_eq!(
        key.check_backup(s(version, "algorithm"), &version["auth_data"])
            .unwrap_err(),
        Undecryptable::KeyDoesNotMatchBackup
    );
    for row in f["e2e_room_keys"].as_array().unwrap() {
        assert!(matches!(
            key.decrypt_session(&row["session_data"]),
            Err(Undecryptable::BackupDecryptionFailed(_))
        ));
    }
}

#[test]
fn session_data_as_stored_text_column() {
    let f = fixture();
    let key = backup_decryption_key(
        EscrowedKind::BackupKey,
        s(&f, "backup_key"),
        &BTreeMap::new(),
    )
    .unwrap();
    let row = &f["e2e_room_keys"][0];
    let as_text = Value::String(row["session_data"].to_string());
    assert_eq!(
        key.decrypt_session(&as_text).unwrap(),
        key.decrypt_session(&row["session_data"]).unwrap()
    );
}
