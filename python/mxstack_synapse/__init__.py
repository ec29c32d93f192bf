"""Synapse modules of mxstack: thin forwarders to mxstack's Rust services.

UploadScanner hands every file Synapse is about to store (uploads, thumbnails, cached remote
media) to the mxstack content scanner and refuses it when the scanner finds malware, so an
infected file never reaches the media store or S3. When the scanner cannot give a verdict the
upload fails with 503: an unscanned file is never stored ("fail closed").

Configured by mxstack in homeserver.yaml:

    modules:
      - module: mxstack_synapse.UploadScanner
        config: {scanner_url: "http://content-scanner:8090/_mxstack/scan"}

Synapse's HTTP client gives the scanner 60 s to answer; the scanner's own clamd timeout is lower.
"""

import json
import logging
from io import BytesIO

from twisted.web.client import readBody
from twisted.web.http_headers import Headers

from synapse.api.errors import Codes, SynapseError
from synapse.logging.context import make_deferred_yieldable
from synapse.module_api import NOT_SPAM, ModuleApi

logger = logging.getLogger(__name__)

__all__ = ["UploadScanner"]


class UploadScanner:
    def __init__(self, config: dict, api: ModuleApi):
        self._url = config["scanner_url"]
        self._http = api.http_client
        api.register_spam_checker_callbacks(check_media_file_for_spam=self.check_media_file_for_spam)

    @staticmethod
    def parse_config(config: dict) -> dict:
        url = config.get("scanner_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise Exception("mxstack_synapse.UploadScanner: `scanner_url` must be an http(s) URL")
        return {"scanner_url": url}

    async def check_media_file_for_spam(self, file_wrapper, file_info):
        buf = BytesIO()
        await file_wrapper.write_chunks_to(buf.write)
        try:
            response = await self._http.request(
                "POST",
                self._url,
                data=buf.getvalue(),
                headers=Headers({"Content-Type": ["application/octet-stream"]}),
            )
            body = await make_deferred_yieldable(readBody(response))
            code = response.code
        except Exception as e:  # connection refused, timeout, ...
            logger.warning("content scanner unreachable (%s): refusing the upload", type(e).__name__)
            raise SynapseError(503, "The antivirus scanner is unavailable; try again later", Codes.UNKNOWN)
        if code == 200:
            verdict = json.loads(body)
            if verdict.get("clean") is True:
                return NOT_SPAM
            logger.warning("upload refused by the content scanner: %s", verdict.get("info"))
            return Codes.FORBIDDEN, {}
        logger.warning("content scanner gave no verdict (HTTP %s): refusing the upload", code)
        raise SynapseError(503, "The antivirus scanner could not scan this file; try again later", Codes.UNKNOWN)
