"""A real external credits ledger speaking Sentinel's protocol (README, "External ledger").

It keeps each account's available balance (nano-USD), every hold by ``hold_id`` and what each
hold settled as, and applies each ``hold_id`` once, as the protocol asks: a hold, a capture
or a release sent again changes nothing and answers what the first did. A test switches its
behaviour at will: ``status`` (every call answers it, applying nothing), ``garbage`` (a 201
whose body is not the protocol's), ``delay_s`` (answers wait this long), ``lose_answers`` (the
next N captures are applied but answered 500, so Sentinel sends them again), or ``stop()``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from sentinel.config.budgets import format_usd, parse_usd
from tests.support.loopback import LoopbackSite
from tests.support.processes import free_port

__all__ = ["LEDGER_TOKEN", "FakeHold", "FakeLedger"]

LEDGER_TOKEN = "ledger-bearer-token-0123456789abcdef"


@dataclass
class FakeHold:
    """One hold as the ledger keeps it."""

    account: str
    amount: int  # nano-USD held
    expires_at: int
    state: str = "held"  # "held" | "captured" | "released"
    captured: int = 0  # nano-USD charged by its capture
    request_id: str = ""


class FakeLedger:
    """The ledger on ``127.0.0.1:port``, listening from ``start()`` until ``stop()``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.balances: dict[str, int] = {}  # account -> nano-USD available
        self.holds: dict[str, FakeHold] = {}
        self.posts: Counter[str] = Counter()  # path -> requests received
        self.bodies: list[tuple[str, Any]] = []  # (path, parsed body) of every POST
        self.authorizations: list[str | None] = []
        self.status: int | None = None
        self.garbage = False
        self.delay_s = 0.0
        self.lose_answers = 0
        self._site = LoopbackSite(self.port, self._routes)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def fund(self, account: str, usd: str) -> None:
        """Set ``account``'s available balance."""
        self.balances[account] = parse_usd(usd)

    def charged(self, account: str) -> int:
        """Nano-USD captured from ``account`` so far."""
        return sum(h.captured for h in self.holds.values() if h.account == account)

    def items(self, path: str) -> list[dict[str, Any]]:
        """Every item POSTed to ``captures`` or ``releases``, replays included."""
        return [item for p, body in self.bodies if p == path for item in body[path]]

    async def start(self) -> None:
        await self._site.start()

    async def stop(self) -> None:
        """Stop listening: calls get connection refused."""
        await self._site.stop()

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/holds", self._hold)
        app.router.add_post("/v1/captures", self._captures)
        app.router.add_post("/v1/releases", self._releases)
        app.router.add_get("/v1/accounts/{account}", self._account)

    async def _received(self, request: web.Request, path: str) -> web.Response | Any:
        """Note the call; a forced answer, or the parsed body to act on."""
        self.posts[path] += 1
        self.authorizations.append(request.headers.get("Authorization"))
        body = orjson.loads(await request.read())
        self.bodies.append((path, body))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status is not None:
            return web.Response(status=self.status)
        return body

    async def _hold(self, request: web.Request) -> web.Response:
        body = await self._received(request, "holds")
        if isinstance(body, web.Response):
            return body
        if self.garbage:
            return web.Response(status=201, body=b"<html>ok</html>")
        hold_id, account = body["hold_id"], body["account"]
        amount = parse_usd(body["amount_usd"])
        known = self.holds.get(hold_id)
        if known is not None:
            return _json(200, {"hold_id": hold_id, "balance_usd": self._shown(account)})
        if self.balances.get(account, 0) < amount:
            error = {"message": "insufficient credits", "code": "insufficient_credits"}
            return _json(402, {"error": error, "balance_usd": self._shown(account)})
        self.balances[account] -= amount
        self.holds[hold_id] = FakeHold(account, amount, int(body["expires_at"]))
        return _json(201, {"hold_id": hold_id, "balance_usd": self._shown(account)})

    async def _captures(self, request: web.Request) -> web.Response:
        body = await self._received(request, "captures")
        if isinstance(body, web.Response):
            return body
        results = [self._capture(item) for item in body["captures"]]
        if self.lose_answers:
            self.lose_answers -= 1
            return web.Response(status=500)  # applied, but the answer is lost
        return _json(200, {"results": results})

    def _capture(self, item: dict[str, Any]) -> dict[str, str]:
        hold_id = item["hold_id"]
        hold = self.holds.get(hold_id)
        if hold is None:
            return {"hold_id": hold_id, "status": "unknown"}
        amount = parse_usd(item["amount_usd"])
        if hold.state == "held":
            self.balances[hold.account] += hold.amount - amount
            hold.state, hold.captured, hold.request_id = "captured", amount, item["request_id"]
        status = "captured" if hold.state == "captured" and hold.captured == amount else "conflict"
        return {"hold_id": hold_id, "status": status}

    async def _releases(self, request: web.Request) -> web.Response:
        body = await self._received(request, "releases")
        if isinstance(body, web.Response):
            return body
        results = []
        for item in body["releases"]:
            hold_id = item["hold_id"]
            hold = self.holds.get(hold_id)
            status = "unknown" if hold is None else "released"
            if hold is not None and hold.state == "held":
                self.balances[hold.account] += hold.amount
                hold.state = "released"
            elif hold is not None and hold.state == "captured":
                status = "conflict"
            results.append({"hold_id": hold_id, "status": status})
        return _json(200, {"results": results})

    async def _account(self, request: web.Request) -> web.Response:
        account = request.match_info["account"]
        if account not in self.balances:
            return web.Response(status=404)
        held = sum(
            h.amount for h in self.holds.values() if h.account == account and h.state == "held"
        )
        return _json(200, {"balance_usd": self._shown(account), "held_usd": format_usd(held)})

    def _shown(self, account: str) -> str:
        return format_usd(self.balances.get(account, 0))


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
