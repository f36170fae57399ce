"""Headless Chromium driven over the DevTools protocol (CDP), for tests of the console page:
navigate with scripts on or off, read the DOM, await a DOM state, take a screenshot.

Chromium listens on a loopback port of its choosing (`--remote-debugging-port=0`) and says
which on stderr; the test talks to its first page over a WebSocket (aiohttp's client).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.kit.waits import scaled

_LISTENING = re.compile(rb"DevTools listening on (ws://[^\s]+)")


class CdpError(Exception):
    """Chromium answered a command with an error."""


class Page:
    """One browser tab."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command; its result (events that arrive meanwhile are kept)."""
        number = next(self._ids)
        await self._socket.send_json({"id": number, "method": method, "params": params})
        while True:
            message = await self._next()
            if message.get("id") == number:
                if "error" in message:
                    raise CdpError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._events.append(message)

    async def event(self, method: str) -> dict[str, Any]:
        """The next event called `method` (one that came already is taken first)."""
        for index, kept in enumerate(self._events):
            if kept.get("method") == method:
                return self._events.pop(index)
        while True:
            message = await self._next()
            if message.get("method") == method:
                return message
            self._events.append(message)

    async def _next(self) -> dict[str, Any]:
        message = await self._socket.receive(timeout=scaled(60))
        if message.type is not aiohttp.WSMsgType.TEXT:
            raise CdpError(f"the DevTools connection ended: {message.type}")
        decoded: dict[str, Any] = json.loads(message.data)
        return decoded

    async def open(
        self, url: str, *, scripts: bool = True, size: tuple[int, int] = (1280, 900)
    ) -> None:
        """Load `url` (scripts on or off) in a window of `size`, until its load event."""
        width, height = size
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        await self.call("Emulation.setScriptExecutionDisabled", value=not scripts)
        await self.call("Page.enable")
        self._events.clear()
        await self.call("Page.navigate", url=url)
        await self.event("Page.loadEventFired")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (a promise is awaited); it runs even when the
        page's own scripts are off."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise CdpError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def text(self, selector: str = "body") -> str:
        return str(await self.evaluate(f"document.querySelector({json.dumps(selector)}).innerText"))

    async def until(self, condition: str, *, within: float) -> None:
        """Until the JavaScript `condition` holds, woken by every change of the DOM."""
        expression = f"""new Promise((resolve) => {{
            const holds = () => Boolean({condition});
            if (holds()) {{ resolve(true); return; }}
            new MutationObserver((_, observer) => {{
                if (holds()) {{ observer.disconnect(); resolve(true); }}
            }}).observe(document, {{childList: true, subtree: true, characterData: true,
                                   attributes: true}});
        }})"""
        try:
            async with asyncio.timeout(scaled(within)):
                await self.evaluate(expression)
        except TimeoutError:
            body = await self.text()
            raise AssertionError(f"never true: {condition}\npage: {body[:2000]}") from None

    async def rect(self, selector: str) -> tuple[int, int, int, int]:
        """x, y, width, height of the first element matching `selector`, in CSS pixels."""
        box = await self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })()"
        )
        x, y, width, height = (round(v) for v in box)
        return x, y, width, height

    async def screenshot(self) -> bytes:
        result = await self.call("Page.captureScreenshot", format="png")
        return base64.b64decode(result["data"])


@contextlib.asynccontextmanager
async def browser(profile: Path) -> AsyncIterator[Page]:
    """Headless Chromium with a fresh profile, and its first tab."""
    binary = shutil.which("chromium")
    if binary is None:  # a failure, never a skip: the page is tested in a real browser
        pytest.fail(
            "chromium is not installed (not on PATH); the console is tested in a real headless "
            "browser - install it with: apt-get install -y chromium",
            pytrace=False,
        )
    process = await asyncio.create_subprocess_exec(
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    draining: asyncio.Task[bytes] | None = None
    try:
        async with asyncio.timeout(scaled(60)):
            while not (found := _LISTENING.search(await process.stderr.readline())):
                if process.stderr.at_eof():
                    raise AssertionError("chromium ended before it listened for DevTools")
        draining = asyncio.create_task(process.stderr.read())  # a full pipe would stall it
        port = int(found.group(1).split(b":")[2].split(b"/")[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as answer:
                targets = await answer.json()
            page_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with http.ws_connect(page_url, max_msg_size=64 * 1024 * 1024) as socket:
                yield Page(socket)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        if draining is not None:
            await draining
