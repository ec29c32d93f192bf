"""The LI console on the running stack, end to end: alice and bob talk in an encrypted room with
matrix-nio (real Megolm), alice backs her room keys up and escrows her recovery key through the
Synapse module (a wrong key is refused); the console, under a warrant a supervisor approved,
shows the plaintext, the redacted original and the edit history; outside the warrant's targets
or window, or before approval, it shows nothing; the evidence package verifies and a changed one
does not; the audit chain verifies and a changed row is found. The same flow runs in headless
Chromium with screenshots kept as artefacts (tests/e2e/browser.py).
"""

import base64
import hashlib
import hmac
import html
import io
import os
import json
import re
import sqlite3
import struct
import subprocess
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from http.cookiejar import CookieJar

import pytest

from conftest import mxstack_bin, run


def totp(secret_b32: str, at: float | None = None) -> str:
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    h = hmac.new(key, struct.pack(">Q", int((at or time.time()) // 30)), hashlib.sha1).digest()
    o = h[-1] & 15
    return f"{(struct.unpack('>I', h[o:o + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


def utc(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


class Browserless:
    """A console user over plain HTTP (cookie jar, CSRF token taken from the last page)."""

    def __init__(self, base):
        self.base = base
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.csrf = None

    def request(self, method, path, form=None):
        data = urllib.parse.urlencode(form, doseq=True).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        try:
            with self.opener.open(req, timeout=60) as r:
                status, body, headers = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            status, body, headers = e.code, e.read(), e.headers
        if headers.get("Content-Type", "").startswith("text/html"):
            text = body.decode()
            m = re.search(r'name="csrf" value="([0-9a-f]+)"', text)
            if m:
                self.csrf = m.group(1)
            return status, text
        return status, body

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, form):
        return self.request("POST", path, {**form, "csrf": self.csrf or ""})

    def login(self, account):
        status, text = self.request("POST", "/login", {"username": account["username"], "password": account["password"],
                                                       "code": totp(account["totp_secret"])})
        assert status == 200 and "Log out" in text, (status, text[:500])
        return self


def add_account(stack, name, role):
    r = run("li", "console", "add-user", "--config", stack.config, name, "--role", role, "--json")
    a = json.loads(r.stdout)
    assert a["role"] == role and len(a["password"]) >= 12 and a["otpauth_uri"].startswith("otpauth://totp/")
    return a


# Session-scoped: the last test (after every other module) uses the same accounts and sessions;
# a module fixture would be made again for it (same names, and a TOTP step used twice).
@pytest.fixture(scope="session")
def console(stack, console_material):
    m = console_material
    port = next(p["port"] for p in stack.refresh()["processes"] if p["name"] == "li-console")
    base = f"http://127.0.0.1:{port}"
    run_id = m["run"]
    accounts = {role: add_account(stack, f"{role[:3]}-{run_id}", role) for role in ("investigator", "supervisor", "auditor")}
    accounts["browser-investigator"] = add_account(stack, f"inv-b-{run_id}", "investigator")
    accounts["browser-supervisor"] = add_account(stack, f"sup-b-{run_id}", "supervisor")
    # The console reads the replica: wait until the last event has arrived there.
    from test_li import sql
    last = m["events"][-1]["event_id"]
    deadline = time.monotonic() + 60
    while sql(stack, "replica", f"SELECT count(*) FROM public.redactions WHERE redacts = '{last}'", check=False) != "1":
        assert time.monotonic() < deadline, "the redaction never reached the replica"
        time.sleep(0.5)
    return {"m": m, "base": base, "accounts": accounts}


def new_warrant(inv, users=(), rooms=(), start=None, end=None, expires=None, case="CASE"):
    now = datetime.now(timezone.utc)
    status, text = inv.post("/warrants", {
        "case_ref": f"{case}-{time.time_ns()}",
        "target_users": "\n".join(users), "target_rooms": "\n".join(rooms),
        "window_start": utc(start or now - timedelta(hours=1)), "window_end": utc(end or now + timedelta(hours=1)),
        "expires": utc(expires or now + timedelta(days=1)), "justification": "end-to-end test",
    })
    assert status == 200, text[:800]
    wid = int(re.search(r"<h1>Warrant (\d+)</h1>", text).group(1))
    return wid, text


def room_path(wid, room_id):
    return f"/warrants/{wid}/room?room_id={urllib.parse.quote(room_id, safe='')}"


@pytest.fixture(scope="session")
def people(console):
    a = console["accounts"]
    return {
        "inv": Browserless(console["base"]).login(a["investigator"]),
        "sup": Browserless(console["base"]).login(a["supervisor"]),
        "aud": Browserless(console["base"]).login(a["auditor"]),
    }


def test_login_needs_password_and_second_factor(console):
    acc = console["accounts"]["auditor"]
    c = Browserless(console["base"])
    wrong_code = f"{(int(totp(acc['totp_secret'])) + 1) % 1_000_000:06d}"
    for password, code in ((acc["password"], wrong_code), ("not-the-password", totp(acc["totp_secret"]))):
        status, text = c.request("POST", "/login", {"username": acc["username"], "password": password, "code": code})
        assert status == 401 and "Log out" not in text
    status, text = c.get("/")
    assert "<h1>Log in</h1>" in text


def test_an_approved_warrant_shows_plaintext_redacted_originals_and_edits(console, people):
    m, inv, sup = console["m"], people["inv"], people["sup"]
    alice = m["users"]["alice"]["user_id"]
    wid, page = new_warrant(inv, users=[alice])
    # Pending: nothing is shown, not even the room list.
    assert "pending" in page and m["room_id"] not in page
    status, text = inv.get(room_path(wid, m["room_id"]))
    assert status == 403 and "pending, not approved" in text, text[:500]
    assert "e2ee-1" not in text
    # An investigator cannot approve; the supervisor can.
    status, _ = inv.post(f"/warrants/{wid}/decide", {"decision": "approve"})
    assert status == 403
    sup.get(f"/warrants/{wid}")
    status, text = sup.post(f"/warrants/{wid}/decide", {"decision": "approve"})
    assert status == 200 and "active" in text, text[:500]

    status, page = inv.get(f"/warrants/{wid}")
    assert m["room_id"] in page and m["plain_room_id"] in page
    status, text = inv.get(room_path(wid, m["room_id"]))
    assert status == 200, text[:800]
    body = html.unescape(text)
    by_kind = {e["kind"]: e for e in m["events"]}
    for e in m["events"]:
        if e["kind"] == "message":
            assert e["plaintext"] in body, f"{e['plaintext']} not decrypted:\n{body[:3000]}"
    # The edit: listed under the message it edits, with the new text.
    edited = next(e for e in m["events"] if e["kind"] == "message" and e["plaintext"].startswith("e2ee-3"))
    block = body[body.index(f'id="ev-{edited["event_id"]}"'):]
    block = block[:block.index('<li class="event')] if '<li class="event' in block else block
    assert "Edit history" in block and by_kind["edit"]["plaintext"] in block and edited["plaintext"] in block, block
    # The redacted message: its original text, marked redacted.
    red = by_kind["redacted"]
    assert red["plaintext"] in body and "Redacted on main by" in body and red["redacted_by"] in body
    assert "Not decrypted" not in body, body[:4000]
    assert body.count("Decrypted with") == 4  # e2ee-1..4; the edit is listed under e2ee-3
    # The unencrypted room too.
    status, text = inv.get(room_path(wid, m["plain_room_id"]))
    assert status == 200 and m["plain_events"][0]["plaintext"] in text


def test_nothing_outside_the_targets_or_the_window(console, people, stack):
    m, inv, sup = console["m"], people["inv"], people["sup"]
    alice = m["users"]["alice"]["user_id"]
    carol = stack.user("carol")["user_id"]  # in no room of alice's
    now = datetime.now(timezone.utc)
    other, _ = new_warrant(inv, users=[carol])
    past, _ = new_warrant(inv, users=[alice], start=now - timedelta(hours=3), end=now - timedelta(hours=2))
    for wid in (other, past):
        sup.get(f"/warrants/{wid}")
        status, _ = sup.post(f"/warrants/{wid}/decide", {"decision": "approve"})
        assert status == 200
    status, page = inv.get(f"/warrants/{other}")
    assert m["room_id"] not in page
    status, text = inv.get(room_path(other, m["room_id"]))
    assert status == 403 and "not covered" in text and "e2ee-" not in text
    status, text = inv.get(room_path(past, m["room_id"]))
    assert status == 200 and "No events in the window" in text
    assert all(e["plaintext"] not in html.unescape(text) for e in m["events"])


def test_the_evidence_package_verifies_and_a_changed_one_does_not(console, people, stack, tmp_path):
    m, inv, sup = console["m"], people["inv"], people["sup"]
    alice = m["users"]["alice"]["user_id"]
    wid, _ = new_warrant(inv, users=[alice], case="EXPORT")
    sup.get(f"/warrants/{wid}")
    assert sup.post(f"/warrants/{wid}/decide", {"decision": "approve"})[0] == 200
    inv.get(f"/warrants/{wid}")
    status, package = inv.post(f"/warrants/{wid}/export", {})
    assert status == 200 and isinstance(package, bytes), package[:500]
    path = tmp_path / "evidence.tar"
    path.write_bytes(package)
    r = run("li", "export", "verify", str(path), "--config", stack.config, "--json", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    v = json.loads(r.stdout)
    assert v["ok"] and v["key_pinned"] and v["warrant_id"] == wid
    with tarfile.open(path) as t:
        messages = json.load(t.extractfile("messages.json"))
        names = t.getnames()
    assert {"manifest.json", "manifest.sig", "public_key.txt", "messages.json"} <= set(names)
    dumped = json.dumps(messages)
    for e in m["events"]:
        if e["kind"] in ("message", "redacted"):
            assert e["plaintext"] in dumped
    # One changed byte in messages.json: refused, naming the file.
    changed = tmp_path / "changed.tar"
    with tarfile.open(path) as src, tarfile.open(changed, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name == "messages.json":
                data = data.replace(b"e2ee-1", b"e2ee-X", 1)
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    r = run("li", "export", "verify", str(changed), "--config", stack.config, check=False)
    assert r.returncode == 2 and "messages.json" in r.stderr, r.stderr


def test_the_audit_log_records_everything_and_a_changed_row_is_found(console, people, stack, tmp_path):
    status, text = people["inv"].get("/audit")
    assert status == 403
    status, text = people["aud"].get("/audit")
    assert status == 200 and "Chain verified" in text, text[:800]
    for action in ("login", "login.refused", "warrant.create", "warrant.approve", "view.timeline", "key.retrieve",
                   "view.refused", "export"):
        assert f"<td>{action}</td>" in text, action
    r = run("li", "audit", "verify", "--config", stack.config, "--json", check=False)
    assert r.returncode == 0, r.stdout
    report = json.loads(r.stdout)
    assert report["ok"] and report["rows"] > 10
    # Tamper with a copy (the console keeps running on the original).
    db = stack.state / "li-console" / "li-console.sqlite3"
    copy = tmp_path / "tampered.sqlite3"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    with sqlite3.connect(copy) as c:
        for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'").fetchall():
            c.execute(f'DROP TRIGGER "{name}"')
        seq = c.execute("SELECT seq FROM audit_log WHERE action = 'export' ORDER BY seq LIMIT 1").fetchone()[0]
        c.execute("UPDATE audit_log SET actor = 'somebody-else' WHERE seq = ?", (seq,))
    r = run("li", "audit", "verify", "--database", str(copy), "--json", check=False)
    assert r.returncode == 2, r.stdout
    assert f"seq {seq}" in json.loads(r.stdout)["error"], r.stdout


def test_console_pages_in_headless_chromium(console, stack):
    from browser import chromium_pages, shot

    m, base, a = console["m"], console["base"], console["accounts"]
    alice = m["users"]["alice"]["user_id"]
    now = datetime.now(timezone.utc)

    def login(page, account, name):
        page.goto(base + "/login")
        page.fill("input[name=username]", account["username"])
        page.fill("input[name=password]", account["password"])
        page.fill("input[name=code]", totp(account["totp_secret"]))
        shot(page, f"console-{name}-login")
        page.click("main button[type=submit]")
        page.wait_for_selector("text=Log out")

    with chromium_pages(2) as (inv, sup):
        login(inv, a["browser-investigator"], "investigator")
        inv.goto(base + "/warrants/new")
        inv.fill("input[name=case_ref]", f"BROWSER-{m['run']}")
        inv.fill("textarea[name=target_users]", alice)
        inv.fill("input[name=window_start]", utc(now - timedelta(hours=1)))
        inv.fill("input[name=window_end]", utc(now + timedelta(hours=1)))
        inv.fill("input[name=expires]", utc(now + timedelta(days=2)))
        inv.fill("textarea[name=justification]", "browser test")
        inv.click("main button[type=submit]")
        inv.wait_for_load_state()
        assert inv.locator("#warrant").count() == 1, inv.inner_text("main")
        assert "pending" in inv.inner_text("#warrant")
        warrant_url = inv.url
        shot(inv, "console-warrant-pending")

        login(sup, a["browser-supervisor"], "supervisor")
        sup.goto(warrant_url)
        sup.click("#approve")
        sup.wait_for_selector(".status.active")
        shot(sup, "console-warrant-approved")

        inv.goto(warrant_url)
        inv.click(f"#rooms a[href*='{urllib.parse.quote(m['room_id'], safe='')}']")
        inv.wait_for_selector("#timeline")
        timeline = inv.inner_text("#timeline")
        red = next(e for e in m["events"] if e["kind"] == "redacted")
        first = m["events"][0]
        assert first["plaintext"] in timeline and red["plaintext"] in timeline and "Redacted on main" in timeline
        assert inv.locator(".event.was-encrypted").count() >= 4
        inv.locator(f"[id='ev-{red['event_id']}']").scroll_into_view_if_needed()
        shot(inv, "console-timeline")

        inv.goto(warrant_url)
        with inv.expect_download() as d:
            inv.click("#export")
        saved = inv.artefact_dir / "console-evidence.tar"
        d.value.save_as(saved)
        shot(inv, "console-export")
    r = run("li", "export", "verify", str(saved), "--config", stack.config, "--json", check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_revoked_and_expired_warrants_show_nothing_and_forms_need_their_token(console, people):
    m, inv, sup = console["m"], people["inv"], people["sup"]
    alice = m["users"]["alice"]["user_id"]
    now = datetime.now(timezone.utc)
    revoked, _ = new_warrant(inv, users=[alice])
    short, _ = new_warrant(inv, users=[alice], expires=now + timedelta(seconds=4))
    sup.get(f"/warrants/{revoked}")
    # A form without its CSRF token is refused and changes nothing.
    status, text = sup.request("POST", f"/warrants/{revoked}/decide", {"decision": "approve"})
    assert status == 403 and "form expired" in text
    assert "pending" in sup.get(f"/warrants/{revoked}")[1]
    for wid in (revoked, short):
        sup.get(f"/warrants/{wid}")
        assert sup.post(f"/warrants/{wid}/decide", {"decision": "approve"})[0] == 200
    assert inv.get(room_path(revoked, m["room_id"]))[0] == 200
    sup.get(f"/warrants/{revoked}")
    status, text = sup.post(f"/warrants/{revoked}/decide", {"decision": "revoke", "reason": "case closed"})
    assert status == 200 and "revoked" in text
    status, text = inv.get(room_path(revoked, m["room_id"]))
    assert status == 403 and "revoked" in text and "e2ee-" not in text
    time.sleep(max(0.0, (now + timedelta(seconds=4.5) - datetime.now(timezone.utc)).total_seconds()))
    status, text = inv.get(room_path(short, m["room_id"]))
    assert status == 403 and "expired" in text and "e2ee-" not in text


@pytest.mark.last(start="console_material")
def test_the_console_shows_the_original_of_a_message_main_has_censored(console, people, stack):
    """Synapse censors the redacted encrypted message on main (the suite's 30 s retention); the
    console then decrypts its original ciphertext from mxstack_li.row_history."""
    from test_li import censor_deadline, sql

    m, inv, sup = console["m"], people["inv"], people["sup"]
    red = next(e for e in m["events"] if e["kind"] == "redacted")
    received = int(sql(stack, "main", f"SELECT received_ts FROM redactions WHERE redacts = '{red['event_id']}'")) / 1000
    deadline, hs = censor_deadline(stack, received)
    if deadline is None:
        pytest.skip("the stack was not started with the suite's short redaction_retention_period")
    query = f"SELECT have_censored FROM redactions WHERE redacts = '{red['event_id']}'"
    while sql(stack, "replica", query, check=False) != "t":
        assert time.time() < deadline, "Synapse did not censor the redacted message in time"
        time.sleep(2)
    pruned = json.loads(sql(stack, "replica", f"SELECT json FROM event_json WHERE event_id = '{red['event_id']}'"))
    assert "ciphertext" not in pruned["content"], pruned
    wid, _ = new_warrant(inv, users=[m["users"]["alice"]["user_id"]], case="CENSORED")
    sup.get(f"/warrants/{wid}")
    assert sup.post(f"/warrants/{wid}/decide", {"decision": "approve"})[0] == 200
    status, text = inv.get(room_path(wid, m["room_id"]))
    body = html.unescape(text)
    block = body[body.index(f'id="ev-{red["event_id"]}"'):]
    block = block[:block.index('<li class="event')] if '<li class="event' in block else block
    assert red["plaintext"] in block and "Decrypted with" in block and "main has censored it" in block, block


def test_media_comes_from_the_li_bucket_decrypted_and_scanned(console, people, stack):
    """An image, an encrypted attachment and an encrypted attachment whose plaintext is EICAR (its
    ciphertext passed the upload scan): the console serves the first two byte for byte from the LI
    bucket copy, and refuses the third after decrypting and scanning it. A link works only for the
    account it was shown to."""
    from test_antivirus import EICAR, encrypt_attachment, http, object_key, png, upload
    from test_li import sql

    m, inv, sup = console["m"], people["inv"], people["sup"]
    alice = m["users"]["alice"]
    token, room = alice["access_token"], m["plain_room_id"]
    picture, secret = png(), os.urandom(30_000)
    sent = {}
    for name, plain, encrypted in (("picture.png", picture, False), ("secret.bin", secret, True),
                                   ("eicar.txt", b"data " + EICAR + b" more", True)):
        if encrypted:
            cipher, keys = encrypt_attachment(plain)
            s, body = upload(stack, token, cipher)
            content = {"msgtype": "m.file", "body": name, "file": {**keys, "url": body["content_uri"]}}
        else:
            s, body = upload(stack, token, plain, name, "image/png")
            content = {"msgtype": "m.image", "body": name, "url": body["content_uri"], "info": {"mimetype": "image/png"}}
        assert s == 200, body
        s, out, _ = http(stack, "PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room)}/send/m.room.message/"
                                       f"media-{name}-{time.time_ns()}", content, token)
        assert s == 200, out
        sent[name] = (plain, object_key(body["content_uri"].rsplit("/", 1)[1]))
    keys = ",".join(f"'{k}'" for _, k in sent.values())
    deadline = time.monotonic() + 120
    while sql(stack, "replica", f"SELECT count(*) FROM mxstack_li.media_objects WHERE key IN ({keys})", check=False) != "3":
        assert time.monotonic() < deadline, "li-sync did not copy the media to the LI bucket"
        time.sleep(1)

    wid, _ = new_warrant(inv, users=[alice["user_id"]], case="MEDIA")
    sup.get(f"/warrants/{wid}")
    assert sup.post(f"/warrants/{wid}/decide", {"decision": "approve"})[0] == 200
    status, text = inv.get(room_path(wid, room))
    assert status == 200
    links = dict((name, href) for href, name in re.findall(r'<a href="(/warrants/\d+/media/[0-9a-f]+)">media: ([^<]+)</a>', text))
    assert set(sent) <= set(links), links
    status, got = inv.get(links["picture.png"])
    assert status == 200 and got == picture
    status, got = inv.get(links["secret.bin"])
    assert status == 200 and got == secret
    status, got = inv.get(links["eicar.txt"])
    assert status == 403 and "infected" in got and EICAR.decode() not in got, got[:500]
    # The supervisor (another account) cannot use the investigator's link.
    status, _ = sup.get(links["picture.png"])
    assert status in (403, 404)


def test_metrics_are_served_apart_from_the_pages(console, people):
    """/metrics is on its own listener (the port after the pages'), never on the pages' port,
    which the edge exposes."""
    base = console["base"]
    pages_port = int(base.rsplit(":", 1)[1])
    status, _ = Browserless(base).get("/metrics")
    assert status == 404
    with urllib.request.urlopen(f"http://127.0.0.1:{pages_port + 1}/metrics", timeout=10) as r:
        text = r.read().decode()
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values['mxstack_li_console_actions_total{action="login"}'] >= 3, text
    assert values["mxstack_li_console_logins_refused_total"] >= 2, text
    assert values["mxstack_li_console_audit_write_failures_total"] == 0, text
    assert values["mxstack_li_console_audit_entries"] > 10, text
    assert values['mxstack_li_console_warrants{status="active"}'] >= 1, text
