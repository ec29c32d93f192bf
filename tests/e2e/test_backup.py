"""Issue 22 item 1, the backup drill, on a stack of its own (feature li, one process per worker
group, base port 23000):

1. messages and media are sent through the router, a base backup of both clusters is taken
   (`mxstack backup now`: main and the LI cluster, each to its own archive);
2. a restore to a time before any backup is refused, naming each cluster's oldest restorable
   time, and the running stack is untouched;
3. more messages follow: A, then a moment T is noted, then B, more media, a last message; once
   the LI replica has them, the current WAL segment of both clusters is closed and archived
   (what archive_timeout does within 60 s);
4. the failure: the stack stops, both PostgreSQL data directories and Synapse's local media store
   are deleted;
5. `mxstack restore --to latest`: every acknowledged message and every media file is back, and
   Synapse serves them (messages API, authenticated media download, byte for byte); the LI
   database has every message too, and a message sent after the restore reaches it (the
   subscription was re-attached);
6. `mxstack restore --to T`: A is there, B and everything after it is not on main; the LI side
   kept B and the later messages (in history, REMOVED) and replicates again;
7. the S3 identities: main's cannot touch the LI backup bucket, the LI backup identity nothing else;
8. the media bucket is versioned: a deleted object's previous version is still readable;
9. `mxstack backup export-secrets`: age's own CLI decrypts the export to secrets.yaml.
"""
import datetime
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import Stack, run

BASE_PORT = int(os.environ.get("MXSTACK_BACKUP_E2E_PORT", "23000"))


def call(stack, token, method, path, body=None, raw=None, content_type="application/json"):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(stack.url + path, method=method, data=data,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=60) as r:
        payload = r.read()
        return payload if r.headers.get("Content-Type", "").split(";")[0] != "application/json" else json.loads(payload)


def send(stack, token, room, text):
    txn = os.urandom(8).hex()
    r = call(stack, token, "PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room)}/send/m.room.message/{txn}",
             {"msgtype": "m.text", "body": text})
    return r["event_id"]


def upload(stack, token, payload):
    return call(stack, token, "POST", "/_matrix/media/v3/upload?filename=f.bin", raw=payload,
                content_type="application/octet-stream")["content_uri"]


def download(stack, token, mxc):
    server, media_id = mxc[len("mxc://"):].split("/", 1)
    return call(stack, token, "GET", f"/_matrix/client/v1/media/download/{server}/{media_id}")


def texts(stack, token, room):
    r = call(stack, token, "GET", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room)}/messages?dir=b&limit=200")
    return [e["content"].get("body") for e in r["chunk"] if e["type"] == "m.room.message"]


def psql(stack, sql, process="postgres", db="postgres"):
    port = next(p["port"] for p in stack.refresh()["processes"] if p["name"] == process)
    r = subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c",
                        f"psql -X -tA -h '{stack.state / 'run'}' -p {port} -U postgres -d {db}"],
                       input=sql, capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def li_db(stack):
    return yaml.safe_load((stack.state / "li-sync" / "li-sync.yaml").read_text())["replica"]["dbname"]


def li_sql(stack, sql):
    """On the LI replica's database (as test_li.py reads it)."""
    return psql(stack, sql, process="postgres-li", db=li_db(stack))


def quoted(ids):
    return ", ".join(f"'{i}'" for i in ids)


def li_live(stack, ids):
    """How many of the events are in the LI replica's event_json."""
    return int(li_sql(stack, f"SELECT count(*) FROM public.event_json WHERE event_id IN ({quoted(ids)})"))


def li_kept(stack, ids):
    """How many of the events the LI side has, live or in its history."""
    return int(li_sql(stack, f"""SELECT count(DISTINCT e) FROM (
        SELECT event_id AS e FROM public.event_json WHERE event_id IN ({quoted(ids)})
        UNION ALL SELECT old_row->>'event_id' FROM mxstack_li.row_history
         WHERE table_name = 'event_json' AND old_row->>'event_id' IN ({quoted(ids)})) k"""))


def wait_li(stack, ids, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if li_live(stack, ids) == len(ids):
                return
        except AssertionError:
            pass  # the table may not be there yet
        time.sleep(0.5)
    raise AssertionError(f"the LI replica did not get {ids} within {timeout} s")


def archive_current_wal(stack, process="postgres"):
    """Closes the current WAL segment and waits until the archiver has shipped it."""
    segment = psql(stack, "SELECT pg_walfile_name(pg_switch_wal());", process)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        last = psql(stack, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver;", process)
        if last >= segment:
            return segment
        time.sleep(1)
    raise AssertionError(f"WAL segment {segment} of {process} was not archived within 120 s")


@pytest.fixture(scope="module")
def backup_stack():
    base = Path(tempfile.mkdtemp(prefix="mxstack-backup-e2e-", dir=os.environ.get("MXSTACK_E2E_DIR", "/var/tmp")))
    base.chmod(0o755)
    run("init", "--domain", "backup.mxstack.test", "--scale", "1k", "--features", "li", "--dir", str(base))
    config = str(base / "mxstack.yaml")
    try:
        up = run("up", "--config", config, "--base-port", str(BASE_PORT), "--replicas", "1", "--json", timeout=900)
        assert json.loads(up.stdout)["ready"] is True
        yield Stack(base)
    finally:
        run("down", "--config", config, "--purge", check=False, timeout=300)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def drill(backup_stack):
    s = backup_stack
    alice = s.user("alice")
    tok = alice["access_token"]
    room = call(s, tok, "POST", "/_matrix/client/v3/createRoom", {"name": "drill"})["room_id"]
    d = {"stack": s, "token": tok, "room": room, "media": {}, "ids": {}}
    for i in range(3):
        d["ids"][f"before-backup-{i}"] = send(s, tok, room, f"before-backup-{i}")
    for i in range(2):
        payload = os.urandom(40_000 + i)
        d["media"][upload(s, tok, payload)] = payload
    wait_li(s, list(d["ids"].values()))

    started = time.monotonic()
    r = run("backup", "now", "--config", s.config, "--json", timeout=300)
    d["backup_seconds"] = time.monotonic() - started
    d["runs"] = [r]
    d["backup"] = json.loads(r.stdout)["clusters"]
    assert d["backup"]["main"]["backup"]["status"] == "DONE"
    assert d["backup"]["li"]["backup"]["status"] == "DONE"

    # Bad input while the stack runs: refused before anything stops.
    pid_before = s.refresh()["supervisor_pid"]
    bad = run("restore", "--config", s.config, "--to", "2000-01-01T00:00:00Z", check=False)
    d["bad"] = bad
    d["after_bad"] = s.refresh()
    d["pid_before"] = pid_before

    d["ids"]["after-backup-A"] = send(s, tok, room, "after-backup-A")
    time.sleep(1.5)
    d["between"] = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    time.sleep(1.5)
    d["ids"]["after-backup-B"] = send(s, tok, room, "after-backup-B")
    payload = os.urandom(50_000)
    d["late_media"] = upload(s, tok, payload)
    d["media"][d["late_media"]] = payload
    d["ids"]["last-message"] = send(s, tok, room, "last-message")
    # Acknowledged: on main, and on the LI replica; both archived (archive_timeout's work).
    wait_li(s, list(d["ids"].values()))
    archive_current_wal(s)
    archive_current_wal(s, "postgres-li")

    # The failure: the stack stops, both clusters' data directories are lost.
    r = run("down", "--config", s.config, "--json", timeout=300)
    assert json.loads(r.stdout) == {"stopped": True, "deleted": None}, r.stdout
    shutil.rmtree(s.state / "postgres" / "data")
    shutil.rmtree(s.state / "postgres" / "li-data")
    shutil.rmtree(s.state / "synapse" / "data" / "media", ignore_errors=True)

    started = time.monotonic()
    r = run("restore", "--config", s.config, "--to", "latest", "--json", timeout=900)
    d["runs"].append(r)
    d["latest"] = json.loads(r.stdout)
    d["latest_seconds"] = time.monotonic() - started
    d["latest_texts"] = texts(s, tok, room)
    d["latest_media"] = {mxc: download(s, tok, mxc) for mxc in d["media"]}
    d["latest_li_live"] = li_live(s, list(d["ids"].values()))
    # Replication resumed: a message sent now reaches the LI side.
    d["after_restore"] = send(s, tok, room, "after-restore")
    wait_li(s, [d["after_restore"]])
    # The LI cluster is restored from its archive again below: what it has must be archived.
    archive_current_wal(s, "postgres-li")

    started = time.monotonic()
    r = run("restore", "--config", s.config, "--to", d["between"], "--json", timeout=900)
    d["runs"].append(r)
    d["pitr"] = json.loads(r.stdout)
    d["pitr_seconds"] = time.monotonic() - started
    d["pitr_texts"] = texts(s, tok, room)
    d["pitr_li_kept"] = li_kept(s, list(d["ids"].values()) + [d["after_restore"]])
    d["pitr_li_live_b"] = li_live(s, [d["ids"]["after-backup-B"]])
    d["after_pitr"] = send(s, tok, room, "after-pitr")
    wait_li(s, [d["after_pitr"]])
    d["li_status"] = li_healthy(s)
    d["outputs"] = [bad.stdout + bad.stderr] + [x.stdout + x.stderr for x in d.pop("runs")]
    timings = os.environ.get("MXSTACK_BACKUP_TIMINGS")
    if timings:
        Path(timings).write_text(json.dumps({
            "backup_now": d["backup_seconds"], "backup_now_main": d["backup"]["main"]["seconds"],
            "backup_now_li": d["backup"]["li"]["seconds"], "restore_latest": d["latest_seconds"],
            "restore_pitr": d["pitr_seconds"],
            "reattach_latest": d["latest"]["li_reattach"]["seconds"],
            "reattach_pitr": d["pitr"]["li_reattach"]["seconds"]}, indent=1))
    return d


def li_healthy(stack, timeout=120):
    """`mxstack li status` until it reports no problem (exit 0)."""
    deadline = time.monotonic() + timeout
    while True:
        r = run("li", "status", "--config", stack.config, "--json", check=False)
        if r.returncode == 0 or time.monotonic() > deadline:
            return r
        time.sleep(2)


def test_a_restore_before_the_oldest_backup_names_the_oldest_restorable_time(drill):
    bad = drill["bad"]
    assert bad.returncode != 0
    assert "oldest restorable time is" in bad.stderr, bad.stderr
    # Each cluster's oldest restorable time is named.
    for cluster in ("main", "li"):
        end = drill["backup"][cluster]["backup"]["end"]
        assert f"{cluster}-pg: {end}" in bad.stderr, (cluster, end, bad.stderr)
    # Nothing stopped.
    assert drill["after_bad"]["phase"] == "ready"
    assert drill["after_bad"]["supervisor_pid"] == drill["pid_before"]


def test_restore_latest_brings_back_every_message_and_media_file(drill):
    t = drill["latest_texts"]
    for want in ["before-backup-0", "before-backup-1", "before-backup-2",
                 "after-backup-A", "after-backup-B", "last-message"]:
        assert want in t, (want, t)
    for mxc, payload in drill["media"].items():
        assert drill["latest_media"][mxc] == payload, mxc
    r = drill["latest"]
    assert r["restored"] is True
    assert r["target"] == "latest"
    # Nothing was deleted: with the data directories lost there was nothing to move aside.
    assert r["clusters"]["main"]["previous_data"] is None
    assert r["clusters"]["li"]["previous_data"] is None
    assert r["clusters"]["li"]["target"] == "latest"


def test_restore_latest_brings_back_every_message_on_the_li_side_and_replication_resumes(drill):
    # Every acknowledged message is in the LI replica's event_json...
    assert drill["latest_li_live"] == len(drill["ids"]), drill["latest_li_live"]
    # ...the subscription was attached to the restored main (a new slot)...
    r = drill["latest"]["li_reattach"]
    assert r["subscription"] == "mxstack_li" and r["slot_lsn"], r
    # ...and a message sent after the restore reached it (wait_li in the fixture).
    assert drill["after_restore"]


def test_point_in_time_restore_keeps_the_first_message_and_not_the_second(drill):
    t = drill["pitr_texts"]
    assert "after-backup-A" in t, t
    assert "after-backup-B" not in t, t
    assert "last-message" not in t, t
    assert "before-backup-2" in t, t
    # The directories restore --to latest made were moved aside, not deleted.
    aside = Path(drill["pitr"]["clusters"]["main"]["previous_data"])
    assert aside.name.startswith("data.before-restore-") and (aside / "PG_VERSION").exists()
    li_aside = Path(drill["pitr"]["clusters"]["li"]["previous_data"])
    assert li_aside.name.startswith("li-data.before-restore-") and (li_aside / "PG_VERSION").exists()
    # Media from before T is still served.
    s, tok = drill["stack"], drill["token"]
    early = [m for m in drill["media"] if m != drill["late_media"]]
    for mxc in early:
        assert download(s, tok, mxc) == drill["media"][mxc]


def test_point_in_time_restore_loses_nothing_on_the_li_side(drill):
    # Main went back to T; the LI side still has every message, B and later ones in its history
    # (REMOVED: main no longer has them), not in its live tables, which mirror main.
    assert drill["pitr_li_kept"] == len(drill["ids"]) + 1, drill["pitr_li_kept"]
    assert drill["pitr_li_live_b"] == 0
    assert drill["pitr"]["clusters"]["li"]["target"] == "latest"
    assert drill["pitr"]["li_reattach"]["history_rows"] > 0
    # And it replicates again (wait_li in the fixture); li status finds nothing wrong.
    assert drill["after_pitr"]
    st = drill["li_status"]
    assert st.returncode == 0, st.stdout + st.stderr


def test_backup_list_names_each_clusters_backup_and_oldest_restorable_time(drill):
    s = drill["stack"]
    r = json.loads(run("backup", "list", "--config", s.config, "--json").stdout)["clusters"]
    assert r["main"]["archive"] == "s3://pg-backups/main-pg"
    assert r["li"]["archive"] == "s3://pg-backups-li/li-pg"
    for cluster in ("main", "li"):
        b = drill["backup"][cluster]["backup"]
        assert b["id"] in [x["id"] for x in r[cluster]["backups"]]
        assert r[cluster]["oldest_restorable"] == b["end"]


def test_li_backups_are_out_of_reach_of_mains_identity(drill):
    import boto3
    from botocore.exceptions import ClientError
    s = drill["stack"]
    st = s.refresh()

    def client(prefix):
        return boto3.client("s3", endpoint_url=st["s3_endpoint"], region_name="us-east-1",
                            aws_access_key_id=s.secret(f"{prefix}_access_key"),
                            aws_secret_access_key=s.secret(f"{prefix}_secret_key"))

    main, li = client("s3"), client("li_backup_s3")
    # The LI backup identity wrote the LI archive and can read it.
    assert li.list_objects_v2(Bucket="pg-backups-li", Prefix="li-pg/").get("KeyCount", 0) > 0
    # Main's identity can neither list, read, write nor delete there.
    key = li.list_objects_v2(Bucket="pg-backups-li", Prefix="li-pg/")["Contents"][0]["Key"]
    for attempt in (lambda: main.list_objects_v2(Bucket="pg-backups-li"),
                    lambda: main.get_object(Bucket="pg-backups-li", Key=key),
                    lambda: main.put_object(Bucket="pg-backups-li", Key="li-pg/x", Body=b"x"),
                    lambda: main.delete_object(Bucket="pg-backups-li", Key=key)):
        with pytest.raises(ClientError):
            attempt()
    assert li.head_object(Bucket="pg-backups-li", Key=key)
    # The LI backup identity reaches nothing of main's.
    with pytest.raises(ClientError):
        li.list_objects_v2(Bucket="pg-backups")
    with pytest.raises(ClientError):
        li.list_objects_v2(Bucket=st["s3_bucket"])
    # Secrets never in the commands' output.
    for out in drill["outputs"]:
        for secret in ("s3_access_key", "s3_secret_key", "li_backup_s3_access_key",
                       "li_backup_s3_secret_key", "li_replication_password", "li_db_password"):
            assert s.secret(secret) not in out, secret


def test_the_media_bucket_is_versioned(drill):
    import boto3
    s = drill["stack"]
    st = s.refresh()
    c = boto3.client("s3", endpoint_url=st["s3_endpoint"], region_name="us-east-1",
                     aws_access_key_id=s.secret("s3_access_key"), aws_secret_access_key=s.secret("s3_secret_key"))
    bucket = st["s3_bucket"]
    assert c.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
    c.put_object(Bucket=bucket, Key="drill/versioned", Body=b"first")
    c.delete_object(Bucket=bucket, Key="drill/versioned")
    versions = c.list_object_versions(Bucket=bucket, Prefix="drill/versioned").get("Versions", [])
    assert versions, "no noncurrent version kept after a delete"
    got = c.get_object(Bucket=bucket, Key="drill/versioned", VersionId=versions[0]["VersionId"])["Body"].read()
    assert got == b"first"


def test_secrets_export_decrypts_with_age(drill, tmp_path):
    s = drill["stack"]
    key = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    recipient = next(l.split(":", 1)[1].strip() for l in key.read_text().splitlines() if l.startswith("# public key:"))
    out = tmp_path / "secrets.age"
    r = run("backup", "export-secrets", "--config", s.config, "--recipient", recipient, "--out", str(out), "--json")
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    plain = subprocess.run(["age", "-d", "-i", str(key), str(out)], check=True, capture_output=True).stdout
    assert plain == (s.dir / "secrets.yaml").read_bytes()
    for secret in ("s3_secret_key", "registration_shared_secret"):
        assert s.secret(secret) not in r.stdout + r.stderr
        assert s.secret(secret).encode() not in out.read_bytes()
    # A second export to the same file is refused without --force.
    again = run("backup", "export-secrets", "--config", s.config, "--recipient", recipient, "--out", str(out), check=False)
    assert again.returncode != 0 and "--force" in again.stderr
    bad = run("backup", "export-secrets", "--config", s.config, "--recipient", "ssh-rsa AAAA", "--out", str(tmp_path / "x"), check=False)
    assert bad.returncode != 0 and "not an age recipient" in bad.stderr
