"""Opens an HTML file in headless Chromium over the DevTools protocol and fails
(exit 1, each reason on a line) unless the page loads with no console error and
no uncaught exception, no request goes anywhere but the file itself (and
`data:` URLs), it holds at least --min-svg inline SVG charts, and its
screenshot is not blank.

Usage: check_page.py PAGE.html [--min-svg N] [--screenshot OUT.png] [--chromium PATH]
"""

import argparse
import base64
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import websocket
from PIL import Image, ImageStat


class Browser:
    """A headless Chromium with one page target, driven over one websocket."""

    def __init__(self, chromium, profile):
        self.proc = subprocess.Popen(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "--window-size=1280,1600",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = pathlib.Path(profile, "DevToolsActivePort")
        deadline = time.monotonic() + 30
        while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its DevTools port in 30 s")
            time.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=30)
        self.next_id = 0
        self.events = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method, session=None, **params):
        """Sends a command and returns its result; events meanwhile are kept."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def page(self, method, **params):
        return self.call(method, session=self.session, **params)

    def wait_for(self, method, seconds):
        """Waits until an event `method` has arrived (kept in `events`)."""
        deadline = time.monotonic() + seconds
        while not any(e["method"] == method for e in self.events):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no {method} within {seconds} s")
            self.ws.settimeout(left)
            reply = json.loads(self.ws.recv())
            if "method" in reply:
                self.events.append(reply)
        self.ws.settimeout(30)

    def close(self):
        try:
            self.call("Browser.close")
        except Exception:  # the browser may already be gone
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def problems(page, min_svg, screenshot, chromium):
    """What is wrong with `page` as the browser sees it (empty: nothing)."""
    url = page.resolve().as_uri()
    profile = tempfile.mkdtemp(prefix="report-check-")
    browser = Browser(chromium, profile)
    found = []
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.page(f"{domain}.enable")
        browser.page("Page.navigate", url=url)
        browser.wait_for("Page.loadEventFired", 30)
        # Late requests (images, fonts the layout asks for) have a moment to show.
        time.sleep(1.0)
        svgs = browser.page(
            "Runtime.evaluate", expression="document.querySelectorAll('svg').length", returnByValue=True
        )["result"]["value"]
        shot = base64.b64decode(browser.page("Page.captureScreenshot", format="png")["data"])
        # Drain what arrived while evaluating.
        browser.page("Runtime.evaluate", expression="1")
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)

    for event in browser.events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            found.append(f"console {params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            found.append(f"uncaught exception: {details.get('exception', {}).get('description', details.get('text'))}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            found.append(f"console error ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            request_url = params.get("request", {}).get("url", "")
            if request_url != url and not request_url.startswith("data:"):
                found.append(f"request leaves the file: {request_url}")
    if svgs < min_svg:
        found.append(f"{svgs} inline SVG charts, expected at least {min_svg}")

    image = Image.open(io.BytesIO(shot)).convert("RGB")
    if screenshot:
        pathlib.Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        image.save(screenshot)
    gray = image.convert("L")
    spread = ImageStat.Stat(gray).stddev[0]
    colours = len(image.getcolors(maxcolors=1 << 20) or [])
    inked = sum(gray.histogram()[:200]) / (gray.width * gray.height)
    if spread < 5 or colours < 8 or inked < 0.005:
        found.append(
            f"the screenshot is blank (grey spread {spread:.1f}, {colours} colours, "
            f"{100 * inked:.2f}% dark pixels)"
        )
    return found, svgs, (image.width, image.height), colours


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=pathlib.Path)
    parser.add_argument("--min-svg", type=int, default=1)
    parser.add_argument("--screenshot")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "chromium"))
    args = parser.parse_args()
    if not args.page.is_file():
        print(f"{args.page}: no such file", file=sys.stderr)
        return 2
    found, svgs, size, colours = problems(args.page, args.min_svg, args.screenshot, args.chromium)
    for line in found:
        print(f"{args.page}: {line}")
    if found:
        return 1
    print(
        f"{args.page}: loaded with no console error and no request off the file; "
        f"{svgs} SVG charts; screenshot {size[0]}x{size[1]}, {colours} colours"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
