"""Open a page in headless Chromium (Debian's /usr/bin/chromium) and look at it through the DevTools
protocol: console errors and exceptions, every network request, element counts, a screenshot.

    python tests/browser.py data/demo/report.html shot.png      # prints what it saw as JSON
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = os.environ.get("FELLOWSHIP_CHROMIUM", "/usr/bin/chromium")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--mute-audio")
LOCAL = ("file:", "data:", "blob:", "about:")


def available() -> bool:
    return Path(CHROMIUM).exists() or shutil.which("chromium") is not None


class Page:
    """One headless Chromium with one tab, driven over the DevTools websocket."""

    def __init__(self, width: int = 1280, height: int = 900, timeout: float = 60.0):
        import websocket  # websocket-client, a test dependency

        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="fellowship-chromium-")
        binary = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
        self.process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port = self._port()
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)
        self._id = 0
        self.console: list[dict] = []  # console messages: {"level", "text"}
        self.exceptions: list[str] = []
        self.requests: list[str] = []
        for method in ("Runtime.enable", "Log.enable", "Page.enable", "Network.enable"):
            self.send(method)
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _port(self) -> int:
        marker = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self.process.returncode}")
            time.sleep(0.05)
        raise TimeoutError("chromium did not open its DevTools port")

    def _record(self, event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append({"level": params.get("type"), "text": text})
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.exceptions.append(details.get("exception", {}).get("description") or details.get("text", ""))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append({"level": entry.get("level"), "text": entry.get("text", "")})
        elif method == "Network.requestWillBeSent":
            self.requests.append(params.get("request", {}).get("url", ""))

    def send(self, method: str, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._record(message)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def open(self, path: Path, ready: str = "document.body && document.body.dataset.ready === '1'") -> None:
        """Load a file and wait until `ready` is true."""
        self.send("Page.navigate", url=Path(path).resolve().as_uri())
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.evaluate(f"Boolean({ready})"):
                return
            time.sleep(0.1)
        raise TimeoutError(f"{path}: the page never became ready ({ready})")

    def count(self, selector: str) -> int:
        return self.evaluate(f"document.querySelectorAll({json.dumps(selector)}).length")

    def screenshot(self, path: Path, full_page: bool = True) -> bytes:
        params = {"format": "png"}
        if full_page:
            height = self.evaluate("Math.ceil(document.documentElement.scrollHeight)")
            width = self.evaluate("Math.ceil(document.documentElement.scrollWidth)")
            params["clip"] = {"x": 0, "y": 0, "width": width, "height": min(height, 16000), "scale": 1}
            params["captureBeyondViewport"] = True
        data = base64.b64decode(self.send("Page.captureScreenshot", **params)["data"])
        Path(path).write_bytes(data)
        return data

    def errors(self) -> list[str]:
        return self.exceptions + [m["text"] for m in self.console if m["level"] in ("error", "assert")]

    def network(self) -> list[str]:
        """Requests that left the machine (anything but the file itself and inline data)."""
        return [u for u in self.requests if not u.startswith(LOCAL)]

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Page":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def look(html: Path, png: Path) -> dict:
    """What a report page shows: errors, network requests, charts drawn, prompts listed, screenshot."""
    with Page() as page:
        page.open(html)
        seen = {
            "errors": page.errors(),
            "network": page.network(),
            "charts": page.count("[data-chart]"),
            "charts_drawn": page.count("[data-chart].drawn svg"),
            "marks": page.count("[data-chart] svg path, [data-chart] svg rect, [data-chart] svg circle"),
            "pairs": page.count("#pair-list .pair"),
            "count": page.evaluate("document.getElementById('pair-count').textContent"),
        }
        page.screenshot(png)
    return seen


if __name__ == "__main__":
    print(json.dumps(look(Path(sys.argv[1]), Path(sys.argv[2])), indent=2))
