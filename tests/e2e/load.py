"""A steady message load from a real client (matrix-nio), for the tests that change a running
stack (upgrade, scale): what Synapse acknowledged is remembered, and checked for afterwards."""
import asyncio
import threading

from nio import AsyncClient, AsyncClientConfig, RoomGetEventResponse, RoomSendResponse


class Load:
    """Sends a message every 50 ms from a thread of its own, round robin over `rooms`."""

    def __init__(self, stack, user, rooms):
        self.stack, self.user, self.rooms = stack, user, rooms
        self.acked, self.failed, self.stop = [], 0, threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self.run()))

    async def run(self):
        c = AsyncClient(self.stack.url, self.user["user_id"], config=AsyncClientConfig(store_sync_tokens=False))
        c.restore_login(self.user["user_id"], self.user["device_id"], self.user["access_token"])
        i = 0
        while not self.stop.is_set():
            room = self.rooms[i % len(self.rooms)]
            try:
                r = await asyncio.wait_for(c.room_send(room, "m.room.message", {"msgtype": "m.text", "body": f"load {i}"}), 10)
            except Exception:  # the stack is restarting: not acknowledged, not counted
                r = None
            if isinstance(r, RoomSendResponse):
                self.acked.append((room, r.event_id))
            else:
                self.failed += 1
                await asyncio.sleep(0.5)
            i += 1
            await asyncio.sleep(0.05)
        await c.close()

    def start(self):
        self.thread.start()

    def finish(self):
        self.stop.set()
        self.thread.join(60)


async def missing(stack, user, acked):
    """The acknowledged (room, event id) pairs Synapse no longer serves."""
    c = AsyncClient(stack.url, user["user_id"])
    c.restore_login(user["user_id"], user["device_id"], user["access_token"])
    lost = [e for room, e in acked if not isinstance(await c.room_get_event(room, e), RoomGetEventResponse)]
    await c.close()
    return lost
