"""microgpt studio in real headless Chromium (Debian's `chromium` driven by Playwright).

Oracles: the engine behind the server (attention weights, `sample.probabilities` of its
logits), the causal mask's shape, and the server's own address for every request the page
makes. Skipped, with the reason, where Playwright or /usr/bin/chromium is missing
(`.ci/run` installs both where it can). Screenshots of each view are saved under pytest's
tmp dir; the path is printed.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pytest

from microgpt.__main__ import build_parser
from microgpt.sample import probabilities
from microgpt.studio.cli import build_session
from microgpt.studio.server import StudioServer
from microgpt.studio.trace import reference_attention

CHROMIUM = os.environ.get("MICROGPT_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TINY = ["--n-embd", "8", "--n-head", "2", "--block-size", "8", "--seed", "7"]


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; .ci/run does)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)) and not shutil.which(
        CHROMIUM
    ):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    return sync_playwright


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _playwright()
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory, request):
    path = tmp_path_factory.mktemp("studio-screenshots")
    yield path
    if any(path.iterdir()):
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\nmicrogpt studio screenshots: {path}")


@pytest.fixture
def studio(names_path):
    args = build_parser().parse_args(["studio", "--engine", "ref", "--data", str(names_path),
                                      "--port", "0", "--steps", "40", "--sample-every", "5",
                                      *TINY])  # fmt: skip
    server = StudioServer(build_session(args), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.session.close()
    server.shutdown()
    server.server_close()


class Page:
    """A page on the studio that records console errors and every request it makes."""

    def __init__(self, browser, server):
        self.origin = server.url.rstrip("/")
        self.context = browser.new_context(viewport={"width": 1200, "height": 820})
        self.page = self.context.new_page()
        self.errors, self.requests = [], []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(server.url)

    def attr(self, selector, name):
        return self.page.locator(selector).get_attribute(name)

    def wait_until(self, check, timeout=120.0, what="condition"):
        # NOTE: Playwright's wait_for_function evaluates a string, which the studio's CSP
        # (no 'unsafe-eval') forbids, so the test polls attributes instead.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    def check_clean(self):
        assert self.errors == []
        outside = [u for u in self.requests if not u.startswith(self.origin + "/")]
        assert outside == [], "requests left the server's address"

    def close(self):
        self.context.close()


def test_train_streams_loss_and_samples(browser, studio, shots):
    p = Page(browser, studio)
    try:
        p.wait_until(lambda: p.attr("#conn", "data-state") == "live", what="the stream")
        assert p.page.locator("#samples li").count() == 8  # step-0 samples
        assert p.attr("#samples", "data-step") == "0"
        assert p.attr("#loss-chart", "data-steps") == "0"
        p.page.click("#btn-train")
        p.wait_until(lambda: int(p.attr("#loss-chart", "data-steps")) >= 20, what="loss points")
        p.wait_until(lambda: int(p.attr("#samples", "data-step")) >= 10, what="new samples")
        assert p.page.locator("#loss-chart polyline.loss").count() == 1
        assert p.page.locator("#loss-chart line.uniform").count() == 1
        # the points drawn are the losses the server streamed
        events = studio.session.events.since(None)
        streamed = [json.loads(d)["loss"] for _, k, d in events if k == "step"]
        shown = p.attr("#loss-chart", "data-last-loss")
        assert float(shown) in streamed
        p.wait_until(lambda: p.attr("body", "data-running") == "0", what="the run to end")
        p.wait_until(lambda: p.attr("#loss-chart", "data-steps") == "40", what="all points")
        p.page.screenshot(path=str(shots / "train.png"))
        p.check_clean()
    finally:
        p.close()


def test_look_inside_shows_the_engine_numbers(browser, studio, shots):
    p = Page(browser, studio)
    try:
        p.page.click("#tabs button[data-view=inside]")
        p.wait_until(lambda: p.attr("body", "data-inside") == "emma@1", what="emma")
        p.page.fill("#word", "olivia")
        p.wait_until(lambda: p.attr("body", "data-inside") == "olivia@1", what="olivia")
        session = studio.session
        tok = session.run.trainer.tokenizer
        inputs = tok.doc_tokens("olivia")[:-1][: session.engine.config.block_size]
        n = len(inputs)
        attention = reference_attention(session.engine.parameters(), session.engine.config,
                                        inputs)  # the ref engine's, through its traced forward
        for li, layer in enumerate(attention):
            for h, rows in enumerate(layer):
                svg = f"svg.attn[data-layer='{li}'][data-head='{h}']"
                cells = p.page.locator(f"{svg} rect.cell:not(.masked)")
                assert cells.count() == n * (n + 1) // 2
                got = {}
                for i in range(cells.count()):
                    c = cells.nth(i)
                    got[int(c.get_attribute("data-t")), int(c.get_attribute("data-s"))] = float(
                        c.get_attribute("data-w")
                    )
                for t in range(n):
                    row = [got[t, s] for s in range(t + 1)]
                    assert row == rows[t]  # exactly the engine's weights
                    assert sum(row) == pytest.approx(1.0, abs=1e-12)
                masked = p.page.locator(f"{svg} rect.cell.masked")
                assert masked.count() == n * (n - 1) // 2  # the upper triangle
                for i in range(masked.count()):
                    m = masked.nth(i)
                    assert int(m.get_attribute("data-s")) > int(m.get_attribute("data-t"))
                    assert m.get_attribute("data-w") is None
        # probability bars at temperature 1, then after moving the slider
        logits = session.engine.forward(inputs)
        check_bars(p, logits, 1.0)
        p.page.locator("#temp").fill("0.5")
        p.wait_until(lambda: p.attr("body", "data-inside") == "olivia@0.5", what="temperature")
        check_bars(p, logits, 0.5)
        p.page.screenshot(path=str(shots / "look_inside.png"), full_page=True)
        p.check_clean()
    finally:
        p.close()


def check_bars(p, logits, temperature):
    for t, row in enumerate(logits):
        probs = probabilities(row, temperature)
        svg = p.page.locator(f"svg.bars[data-t='{t}']")
        bars = svg.locator("rect.bar")
        got = [float(bars.nth(i).get_attribute("data-p")) for i in range(bars.count())]
        assert got == probs
        assert sum(got) == pytest.approx(1.0, abs=1e-12)
        argmax = max(range(len(probs)), key=probs.__getitem__)
        assert int(svg.get_attribute("data-argmax")) == argmax
        assert "argmax" in bars.nth(argmax).get_attribute("class")


def test_embeddings_graph_and_sample_views(browser, studio, shots):
    p = Page(browser, studio)
    try:
        p.page.click("#tabs button[data-view=embeddings]")
        p.wait_until(lambda: p.page.locator("#emb-chart circle").count() == 27, what="points")
        p.page.screenshot(path=str(shots / "embeddings.png"))

        p.page.click("#tabs button[data-view=graph]")
        p.wait_until(lambda: p.page.locator("#graph-svg g.gnode").count() > 0, what="graph")
        p.page.locator("#graph-positions button").nth(2).click()
        p.wait_until(lambda: "position 2" in p.page.inner_text("#graph-status"), what="pos 2")
        before = p.page.locator("#graph-svg g.gnode").count()
        p.page.locator("#graph-svg g.gnode.expandable").first.click()
        p.wait_until(lambda: p.page.locator("#graph-svg g.gnode").count() > before, what="expand")
        assert p.page.locator("#graph-ops tr").count() >= 5
        p.page.screenshot(path=str(shots / "graph.png"), full_page=True)

        p.page.click("#tabs button[data-view=sample]")
        p.page.fill("#s-count", "12")
        p.page.click("#btn-sample")
        p.wait_until(lambda: p.page.locator("#sample-list li").count() == 12, what="samples")
        assert p.page.locator("#sample-report tr").count() >= 5
        p.page.screenshot(path=str(shots / "sample.png"), full_page=True)
        p.check_clean()
    finally:
        p.close()
