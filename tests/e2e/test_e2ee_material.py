"""E2EE material made by a real client (matrix-nio with vodozemac) reaches what the LI side reads:
alice's key backup and the encrypted events on the LI replica (logical replication), and her
escrowed recovery key in the key vault. See e2ee_material.py for what is made."""

import json
import subprocess
import time
import urllib.parse

from e2ee_material import make_e2ee_material
from test_key_vault import call, signed_warrant, vault_url
from test_li import li_status, quote_list, sql


def poll_replica(stack, query, expected, timeout=30):
    deadline = time.monotonic() + timeout
    got = None
    while True:
        got = sql(stack, "replica", query, check=False)  # the row may not have arrived yet
        if got == expected:
            return
        assert time.monotonic() < deadline, f"replica: {query!r} gave {got!r}, expected {expected!r}"
        time.sleep(0.5)


def test_e2ee_material_reaches_the_replica(stack, tmp_path):
    m = make_e2ee_material(stack, tmp_path / "nio")
    alice = m["users"]["alice"]["user_id"]
    room, version = m["room_id"], m["backup_version"]
    assert [e["kind"] for e in m["events"]] == ["message", "message", "message", "edit", "redacted"], m["events"]
    assert m["escrow"]["wrong_status"] == 400 and m["escrow"]["status"] == 200, m["escrow"]

    # The replica's subscription may still be starting on a fresh stack.
    deadline = time.monotonic() + 120
    while not (s := li_status(stack)).get("healthy"):
        assert time.monotonic() < deadline, f"LI replica not healthy: {s.get('problems')}"
        time.sleep(1)

    # Alice's key backup: the version and one row per session, as she uploaded it.
    poll_replica(stack, f"SELECT count(*) FROM public.e2e_room_keys_versions WHERE user_id = '{alice}' "
                        f"AND version = {int(version)} AND algorithm = 'm.megolm_backup.v1.curve25519-aes-sha2'", "1")
    sessions = sorted((s["session_id"] for s in m["backup_sessions"]), key=str.encode)
    poll_replica(stack, f"SELECT string_agg(session_id, ',' ORDER BY session_id COLLATE \"C\") FROM public.e2e_room_keys "
                        f"WHERE user_id = '{alice}' AND room_id = '{room}' AND version = {int(version)}", ",".join(sessions))
    got = json.loads(sql(stack, "replica", f"SELECT json_agg(session_data::json) FROM public.e2e_room_keys "
                                           f"WHERE user_id = '{alice}' AND room_id = '{room}'"))
    assert all(set(d) == {"ephemeral", "ciphertext", "mac"} for d in got), got

    # The encrypted events: m.room.encrypted, no plaintext; the plain room's message is not.
    ids = [e["event_id"] for e in m["events"]]
    poll_replica(stack, f"SELECT count(*) FROM public.events WHERE event_id IN ({quote_list(ids)}) "
                        f"AND type = 'm.room.encrypted' AND room_id = '{room}'", str(len(ids)))
    plain = m["plain_events"][0]
    poll_replica(stack, f"SELECT type FROM public.events WHERE event_id = '{plain['event_id']}'", "m.room.message")
    stored = json.loads(sql(stack, "replica", f"SELECT json_object_agg(event_id, json) FROM public.event_json "
                                              f"WHERE event_id IN ({quote_list(ids)})"))
    for e in m["events"]:
        ev = json.loads(stored[e["event_id"]])
        assert ev["origin_server_ts"] == e["ts"] and ev["sender"] == e["sender"], (e, ev)
        assert e["plaintext"] not in stored[e["event_id"]]
        if e["kind"] != "redacted":  # censoring may already have emptied the redacted one's content
            assert ev["content"]["session_id"] == e["session_id"] and ev["content"]["ciphertext"], ev
        if e["kind"] == "edit":
            assert ev["content"]["m.relates_to"] == {"rel_type": "m.replace", "event_id": e["replaces"]}, ev

    # The key vault holds the recovery key, for alice's backup version; age opens it.
    url = vault_url(stack) + "/v1/keys/" + urllib.parse.quote(alice, safe="")
    code, r = call(url, "GET", headers={"Authorization": "Bearer " + stack.secret("key_vault_retrieval_api_key"),
                                        "X-Mxstack-Warrant": signed_warrant(stack, [alice], "W-E2EE-MATERIAL")})
    assert code == 200 and r["user_id"] == alice, r
    keys = [k for k in r["keys"] if k["kind"] == "recovery_key"]
    assert len(keys) == 1 and keys[0]["backup_version"] == version, r
    identity = tmp_path / "identity.txt"
    identity.write_text(stack.secret("key_vault_age_identity") + "\n")
    identity.chmod(0o600)
    out = subprocess.run(["age", "-d", "-i", str(identity)], input=keys[0]["ciphertext"].encode(),
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode() == m["recovery_key"].strip()
