"""Push gateway allowlist: HTTP pushers may only send to the configured push gateway URL(s).

Synapse accepts any `data.url` whose path is /_matrix/push/v1/notify when a client registers a
pusher (POST /_matrix/client/v3/pushers/set), and its pusher workers then POST notifications
there. Synapse 1.163 has no setting and no module callback that restricts that URL, so this
module wraps the factory Synapse builds every pusher with (PusherPool.pusher_factory, the
function for kind "http"): a pusher whose URL is not in `gateway_urls` raises
PusherConfigException, exactly as Synapse's own URL checks do. That gives:

- on main (POST /pushers/set): 400 with the reason, and nothing is stored;
- on pusher workers: a pusher stored earlier with another URL is not started (Synapse logs
  "Pusher incorrectly configured" and skips it), so nothing is sent to it.

URLs are compared exactly (the string the app registers). Email pushers are not affected.

    modules:
      - module: mxstack_synapse.push.PushGatewayAllowlist
        config: {gateway_urls: ["http://sygnal.matrix.svc.cluster.local:5000/_matrix/push/v1/notify"]}

The factory is reached through the ModuleApi's pusher pool (`_pusherpool`, which ModuleApi
itself holds): Synapse's internals, checked against 1.163.2 by tests/e2e/test_push.py.
"""

import logging
from collections.abc import Mapping

from synapse.module_api import ModuleApi
from synapse.push import PusherConfigException

logger = logging.getLogger(__name__)

__all__ = ["PushGatewayAllowlist"]


class PushGatewayAllowlist:
    def __init__(self, config: Mapping, api: ModuleApi):
        self._allowed = frozenset(config["gateway_urls"])
        factory = api._pusherpool.pusher_factory
        make_http = factory.pusher_types["http"]
        allowed = self._allowed

        def allowlisted(hs, pusher_config):
            url = (pusher_config.data or {}).get("url")
            if url not in allowed:
                # The user and the app are enough to find it; the URL may carry a token.
                logger.warning(
                    "refused HTTP pusher of %s (app %s): URL not the configured push gateway",
                    pusher_config.user_name,
                    pusher_config.app_id,
                )
                raise PusherConfigException(
                    "this server sends push notifications only to its configured push gateway"
                )
            return make_http(hs, pusher_config)

        factory.pusher_types["http"] = allowlisted

    @staticmethod
    def parse_config(config: Mapping) -> Mapping:
        urls = config.get("gateway_urls")
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise Exception("gateway_urls must be a non-empty list of URLs")
        return config
