"""browser.py works: headless Chromium fills and submits a form served on 127.0.0.1 and the posted
value comes back; the screenshot is a non-empty PNG. Needs no stack."""

import html
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from browser import chromium_page, shot

FORM = b"""<!doctype html><html><head><title>form</title></head><body>
<form method="post" action="/submit"><label>Name <input id="name" name="name"></label>
<button id="go" type="submit">Send</button></form></body></html>"""


class Handler(BaseHTTPRequestHandler):
    def _reply(self, body: bytes):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._reply(FORM)

    def do_POST(self):
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
        got = html.escape(form.get("name", [""])[0])
        self._reply(f'<!doctype html><html><body><p id="got">posted: {got}</p></body></html>'.encode())

    def log_message(self, *a):
        pass


@pytest.fixture
def site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "http://127.0.0.1:%d/" % server.server_address[1]
    server.shutdown()
    server.server_close()


def test_chromium_fills_a_form_and_takes_a_screenshot(site, tmp_path):
    with chromium_page(tmp_path) as page:
        page.goto(site)
        page.fill("#name", "Ada Lovelace & co")
        with page.expect_navigation():
            page.click("#go")
        assert page.text_content("#got") == "posted: Ada Lovelace & co"
        png = shot(page, "browser smoke")
    assert png == tmp_path / "browser_smoke.png"
    data = png.read_bytes()
    assert len(data) > 100 and data[:8] == b"\x89PNG\r\n\x1a\n"
