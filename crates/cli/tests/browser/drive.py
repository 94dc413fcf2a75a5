#!/usr/bin/env python3
"""Drives the explorer page in headless Chromium over the Chrome DevTools Protocol
(the --remote-debugging-pipe transport: NUL-terminated JSON on fds 3 and 4, so no
WebSocket library is needed). Used by crates/cli/tests/explore.rs.

    drive.py CHROMIUM URL EXPECT.json SCREENSHOT.png

EXPECT holds: query (typed into the search box) and first_hit (the passage id the
search must put first); label_n (a question number) and label_order (its candidates'
passage ids, most useful first); questions (how many the labels list shows).
Prints one JSON object of what it saw and exits 1 on the first check that fails.
"""
import base64
import json
import os
import subprocess
import sys
import tempfile
import time


class Browser:
    def __init__(self, binary):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        self.profile = tempfile.mkdtemp(prefix="uae-chromium-")

        def fds():
            # Chromium reads commands on fd 3 and writes replies on fd 4. Copy both
            # out of the way first (either may already be 3 or 4), then into place,
            # inheritable (pipes are created close-on-exec).
            r, w = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(r, 3)
            os.dup2(w, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--remote-debugging-pipe", "--no-sandbox",
             "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             f"--user-data-dir={self.profile}", "--window-size=1280,900", "about:blank"],
            # The child's fds 3 and 4 are set up after the fork; close_fds would
            # close them again before exec.
            close_fds=False, preexec_fn=fds,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.next_id = 0
        self.buf = b""
        self.session = None

    def send(self, method, params=None, session=True):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        want = self.next_id
        while True:
            while b"\0" not in self.buf:
                chunk = os.read(self.from_chrome, 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe")
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == want:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expr):
        r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                           "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expr, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            v = self.js(expr)
            if v:
                return v
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {expr}")

    def close(self):
        try:
            self.send("Browser.close", session=False)
        except Exception:
            pass
        self.proc.wait(timeout=10)


def main():
    binary, url, expect_path, shot = sys.argv[1:5]
    expect = json.load(open(expect_path))
    b = Browser(binary)
    seen = {}
    failed = []

    def check(name, ok, got):
        seen[name] = got
        if not ok:
            failed.append(name)

    try:
        target = b.send("Target.createTarget", {"url": "about:blank"}, session=False)
        b.session = b.send("Target.attachToTarget",
                           {"targetId": target["targetId"], "flatten": True},
                           session=False)["sessionId"]
        b.send("Page.enable")
        b.send("Runtime.enable")
        # A passage that carries markup must stay text: a flag it would set if run.
        b.send("Page.navigate", {"url": url + "#labels"})
        b.wait("document.body && document.body.dataset.ready === 'labels'")
        rows = b.js("document.querySelectorAll('#label-list tbody tr').length")
        check("questions", rows == expect["questions"], rows)
        b.js(f"document.querySelector('#label-list tbody tr[data-n=\"{expect['label_n']}\"]').click()")
        b.wait("!document.getElementById('label-detail').hidden")
        order = b.js("[...document.querySelectorAll('#label-detail .candidate')].map(c => c.dataset.passage)")
        check("label_order", order == expect["label_order"], order)
        widths = b.js("[...document.querySelectorAll('#label-detail .bar')].map(x => x.getBoundingClientRect().width)")
        check("bars_drawn", len(widths) == len(order) and widths[0] > 100, widths)
        markup = b.js("document.querySelectorAll('#label-detail script, #label-detail img').length")
        text = b.js("document.getElementById('label-detail').textContent")
        ran = b.js("window.__uae_xss === true || document.title === 'pwned'")
        check("xss_is_text", markup == 0 and not ran and "<script>" in text,
              {"elements": markup, "ran": ran, "literal": "<script>" in text})
        # The README's picture: one question's candidates by utility.
        png = b.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})["data"]
        with open(shot, "wb") as f:
            f.write(base64.b64decode(png))
        seen["screenshot_bytes"] = os.path.getsize(shot)
        # Search: type the question, press the button, read the first hit.
        b.send("Page.navigate", {"url": url + "#search"})
        b.wait("document.body.dataset.ready === 'search'")
        b.js("document.getElementById('query').focus()")
        b.send("Input.insertText", {"text": expect["query"]})
        b.js("document.querySelector('#search-form button').click()")
        b.wait("Number(document.body.dataset.searched) > 0")
        first = b.js("document.querySelector('#hits li').dataset.id")
        check("first_hit", first == expect["first_hit"], first)
        typed = b.js("document.getElementById('query').value")
        check("query_kept", typed == expect["query"], typed)
    except Exception as e:  # a hang or crash is a failure with its reason
        failed.append(f"error: {e}")
    finally:
        b.close()
    seen["failed"] = failed
    print(json.dumps(seen))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
