"""microgpt studio in real headless Chromium (Debian's `chromium` driven by Playwright), as a
learner uses it, on a desktop (1440x900) and a phone (390x844) viewport.

Oracles: the engine behind the server (attention weights, `sample.probabilities` of its
logits, the top five tokens sorted from them), the events it streamed, the causal mask's
shape, rectangles measured by the browser (labels that overlap, a page wider than the
screen, the node just clicked out of view), computed font sizes, and the server's own
address for every request the page makes; no test may see a console error. Skipped, with
the reason, where Playwright or /usr/bin/chromium is missing (`.ci/run` installs both
where it can). Screenshots of every view are saved under pytest's tmp dir (the path is
printed) and, when MICROGPT_SCREENSHOTS names a folder, there too (docs/studio*.png are
the desktop ones).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
from pathlib import Path

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
VIEWPORTS = {"desktop": (1440, 900), "phone": (390, 844)}
VIEWS = ["train", "inside", "embeddings", "graph", "sample"]

# Every visible text's size in CSS px (an SVG text's times its on-screen scale), and the
# page's width: what a phone must not get wrong.
MEASURE = """() => {
  const small = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const e = node.parentElement;
    if (!e || !node.textContent.trim() || e.closest("title")) continue;
    const r = e.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    let px = parseFloat(getComputedStyle(e).fontSize);
    if (e instanceof SVGElement && e.getScreenCTM()) {
      const m = e.getScreenCTM();
      px *= Math.hypot(m.a, m.b);
    }
    if (px < 10.95) small.push([e.tagName, node.textContent.slice(0, 24), px]);
  }
  return {small, width: document.documentElement.scrollWidth, inner: window.innerWidth};
}"""
LABEL_BOXES = """() => [...document.querySelectorAll('#emb-chart text.emb-label')].map((t) => {
  const r = t.getBoundingClientRect();
  return [t.textContent, r.left, r.top, r.right, r.bottom];
})"""


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
    servers = []

    def start(*extra) -> StudioServer:
        args = build_parser().parse_args(["studio", "--engine", "ref", "--data", str(names_path),
                                          "--port", "0", "--steps", "40", "--sample-every", "5",
                                          *TINY, *extra])  # fmt: skip
        server = StudioServer(build_session(args), "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.session.close()
        server.shutdown()
        server.server_close()


class Page:
    """A page on the studio that records console errors and every request it makes."""

    def __init__(self, browser, server, viewport: str, shots: Path):
        self.origin = server.url.rstrip("/")
        self.server, self.viewport, self.shots = server, viewport, shots
        width, height = VIEWPORTS[viewport]
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.errors, self.requests = [], []
        self.provoked = 0  # 400s the test asked for: Chromium logs each as a console error
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(server.url)
        self.wait_until(lambda: self.attr("#conn", "data-state") == "live", what="the stream")

    def attr(self, selector, name):
        return self.page.locator(selector).first.get_attribute(name)

    def wait_until(self, check, timeout=60.0, what="condition"):
        # NOTE: Playwright's wait_for_function evaluates a string, which the studio's CSP
        # (no 'unsafe-eval') forbids, so the test polls instead.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def tab(self, view: str) -> None:
        self.page.click(f"#tabs button[data-view={view}]")
        assert self.page.locator(f"#view-{view}").is_visible()

    def check_layout(self, view: str) -> None:
        """Nothing pans sideways, no visible text under 11 px, every tab on screen."""
        m = self.page.evaluate(MEASURE)
        assert m["width"] <= m["inner"], f"{view}: the page is {m['width']} px wide"
        assert m["small"] == [], f"{view}: text under 11 px: {m['small'][:5]}"
        for tab in self.page.locator("#tabs button").all():
            box = tab.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= m["inner"]

    def shot(self, view: str) -> None:
        name = f"{self.viewport}-{view}.png"
        self.page.screenshot(path=str(self.shots / name), full_page=True)
        extra = os.environ.get("MICROGPT_SCREENSHOTS")
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(self.shots / name, Path(extra) / name)

    def provoke_400(self) -> None:
        """The next request is a user's mistake: the server answers 400, the page says why,
        and Chromium logs the status line to the console (that line only is allowed)."""
        self.provoked += 1

    def close(self):
        try:
            bad = "Failed to load resource: the server responded with a status of 400 (Bad Request)"
            assert self.errors.count(bad) == self.provoked
            assert [e for e in self.errors if e != bad] == []
            outside = [u for u in self.requests if not u.startswith(self.origin + "/")]
            assert outside == [], "requests left the server's address"
        finally:
            self.context.close()


@pytest.fixture(params=list(VIEWPORTS))
def page(request, browser, shots):
    pages = []

    def open_page(server) -> Page:
        p = Page(browser, server, request.param, shots)
        pages.append(p)
        return p

    yield open_page
    for p in pages:
        p.close()


def streamed(server, kind):
    return [json.loads(d) for _, k, d in server.session.events.since(None) if k == kind]


# --- training: pace, step, continue, settings ----------------------------------------------------


def test_train_at_a_pace_step_continue_and_apply_settings(page, studio):
    server = studio("--steps", "12")
    p = page(server)
    assert p.page.locator("#samples li").count() == 8 and p.attr("#samples", "data-step") == "0"
    p.page.click("#btn-step")  # one step, then pause
    p.wait_until(lambda: p.attr("#loss-chart", "data-steps") == "1", what="one step")
    p.wait_until(lambda: p.attr("body", "data-running") == "0", what="the pause")
    assert p.page.inner_text("#stat-step") == "1"
    p.page.locator("#speed").fill("2")  # 5 steps a second
    p.wait_until(lambda: p.attr("body", "data-pace") == "5", what="the pace")
    p.wait_until(lambda: server.session.steps_per_s == 5, what="the server's pace")
    p.page.click("#btn-play")
    p.wait_until(lambda: int(p.attr("#loss-chart", "data-steps")) >= 4, what="paced steps")
    sps = p.page.inner_text("#stat-sps")
    assert sps == "–" or float(sps) <= 5 * 1.2  # a busy machine only slows it
    p.page.locator("#speed").fill("9")  # full speed to the end
    p.wait_until(lambda: p.page.locator("#continue-box").is_visible(), what="the end")
    assert p.page.inner_text("#stat-step") == "12" and p.page.is_disabled("#btn-step")
    p.page.fill("#more-steps", "3")
    p.page.click("#btn-continue")  # past the set steps
    p.wait_until(lambda: p.attr("#loss-chart", "data-steps") == "15", what="3 more steps")
    p.wait_until(lambda: p.attr("body", "data-running") == "0", what="the end")
    losses = [d["loss"] for d in streamed(server, "step")]
    assert len(losses) == 15 and float(p.attr("#loss-chart", "data-last-loss")) == losses[-1]
    # the loss axis: titled, zoomed to the data, round ticks
    texts = p.page.locator("#loss-chart text").all_text_contents()
    assert "loss (nats per token)" in texts and "training step" in texts
    ticks = [float(t) for t in p.attr("#loss-chart", "data-yticks").split(",")]
    step = ticks[1] - ticks[0]
    assert ticks[0] <= min(losses) and ticks[-1] >= max(losses) and ticks[0] > 0
    assert ticks[-1] - ticks[0] < 2 * (max(losses) - min(losses)) + 2 * step
    assert round(step / 10 ** math.floor(math.log10(step) + 1e-9), 6) in (1, 2, 5)
    p.check_layout("train")
    p.shot("train")
    # settings, applied by a new run
    p.page.click("#settings summary")
    for key, value in (("n_embd", "12"), ("n_head", "3"), ("steps", "10")):
        p.page.fill(f"#set-{key}", value)
    p.page.click("#btn-apply")
    p.wait_until(lambda: server.session.run_id == 2, what="the new run")
    p.wait_until(lambda: "n_embd 12" in p.page.inner_text("#info"), what="the new size")
    assert p.page.inner_text("#stat-steps") == "10" and p.attr("#loss-chart", "data-steps") == "0"
    p.page.fill("#set-n_embd", "10")
    p.page.fill("#set-n_head", "4")
    p.provoke_400()
    p.page.click("#btn-apply")
    p.wait_until(lambda: "multiple" in p.page.inner_text("#settings-note"), what="the error")
    assert "--" not in p.page.inner_text("#settings-note") and server.session.run_id == 2


# --- one selected position, linked across the views ---------------------------------------------


def test_one_selected_position_links_every_view(page, studio):
    server = studio()
    p = page(server)
    p.tab("inside")
    p.wait_until(lambda: p.attr("body", "data-inside") == "emma@1", what="emma")
    session = server.session
    tok = session.run.trainer.tokenizer
    inputs = tok.doc_tokens("emma")[:-1]
    n = len(inputs)
    attention = reference_attention(session.engine.parameters(), session.engine.config, inputs)
    for li, layer in enumerate(attention):
        for h, rows in enumerate(layer):
            svg = f"svg.attn[data-layer='{li}'][data-head='{h}']"
            got = p.page.eval_on_selector_all(
                f"{svg} rect.cell:not(.masked)",
                "cells => cells.map(c => [+c.dataset.t, +c.dataset.s, +c.dataset.w])")
            assert sorted(got) == sorted([t, s, rows[t][s]] for t in range(n) for s in range(t + 1))
            assert p.page.locator(f"{svg} rect.cell.masked").count() == n * (n - 1) // 2
    # the pictures explain themselves: axis titles, a colour scale, a probability scale
    titles = p.page.locator("svg.attn text.axis-title").all_text_contents()
    assert "key: position read →" in titles and "query: position reading →" in titles
    assert p.page.locator("#attn-scale .bar").is_visible()
    assert p.page.locator("svg.bars[data-t='0'] text.tick").all_text_contents()[:3] == [
        "0", ".5", "1"]
    assert "BOS" in p.page.inner_text("#view-inside .explain")
    # click an attention cell: its row is the selection, everywhere
    cell = "svg.attn[data-layer='0'][data-head='1'] rect.cell[data-t='2'][data-s='1']"
    p.page.locator(cell).click()
    p.wait_until(lambda: p.attr("body", "data-selected") == "emma@2", what="position 2")
    assert p.page.locator("svg.attn rect.rowsel").count() == 2  # one per head
    assert "sel" in p.attr(".prob-row[data-t='2']", "class")
    assert "sel" in p.attr("rect.lossbar[data-t='2']", "class")
    logits = session.engine.forward(inputs)
    probs = probabilities(logits[2], 1.0)
    labels = ["BOS" if i == tok.BOS else tok.uchars[i] for i in range(tok.vocab_size)]
    best = sorted(range(len(probs)), key=lambda i: (-probs[i], i))[:5]
    top = p.page.locator("#top5 span")
    assert top.count() == 5
    for k, i in enumerate(best):  # the top 5 as text, with percentages
        assert float(top.nth(k).get_attribute("data-p")) == probs[i]
        shown = "BOS" if labels[i] == "BOS" else f"'{labels[i]}'"
        assert top.nth(k).inner_text() == f"{shown} {100 * probs[i]:.1f}%"
    assert "reads:" in p.page.locator(".reads").first.inner_text()
    # a probability row, then a loss bar, select too
    p.page.locator(".prob-row[data-t='3'] .prob-label").click()
    p.wait_until(lambda: p.attr("body", "data-selected") == "emma@3", what="position 3")
    p.page.locator("rect.lossbar[data-t='1']").click(force=True)
    p.wait_until(lambda: p.attr("body", "data-selected") == "emma@1", what="position 1")
    assert p.page.locator("#tokens button.pos.active").inner_text().startswith("1:")
    check_bars(p, logits, 1.0)
    p.page.locator("#temp").fill("0.5")
    p.wait_until(lambda: p.attr("body", "data-inside") == "emma@0.5", what="temperature")
    check_bars(p, logits, 0.5)
    p.check_layout("inside")
    p.shot("inside")
    # the graph opens at the selected position
    p.tab("graph")
    p.wait_until(lambda: (p.attr("body", "data-graph") or "").startswith("emma@1#"), what="graph")
    assert p.page.locator("#graph button.gnode.focus .gname").inner_text() == "loss@1 = −log p('m')"
    # a word longer than the context is cut, and the page says so
    p.tab("inside")
    p.page.fill("#word", "alexandrina")
    p.wait_until(lambda: (p.attr("body", "data-inside") or "").startswith("alexandr@"), what="cut")
    notice = p.page.locator("#cut-notice")
    assert notice.is_visible() and "longer than the context" in notice.inner_text()
    assert p.page.locator("#tokens button.pos").count() == 8


def check_bars(p, logits, temperature):
    for t, row in enumerate(logits):
        probs = probabilities(row, temperature)
        svg = f"svg.bars[data-t='{t}']"
        got = p.page.eval_on_selector_all(f"{svg} rect.bar", "bars => bars.map(b => +b.dataset.p)")
        assert got == probs
        argmax = max(range(len(probs)), key=probs.__getitem__)
        assert int(p.attr(svg, "data-argmax")) == argmax


# --- embeddings over training ---------------------------------------------------------------------


def test_embeddings_replay_with_labels_apart(page, studio):
    server = studio("--steps", "15")
    server.session.start()
    p = page(server)
    p.wait_until(lambda: p.attr("body", "data-running") == "0", what="training")
    p.tab("embeddings")
    snaps = streamed(server, "embeddings")
    assert [d["step"] for d in snaps] == [0, 5, 10, 15]
    p.wait_until(lambda: p.attr("#emb-chart", "data-step") == "15", what="the latest")
    slider = p.page.locator("#emb-slider")
    assert slider.get_attribute("max") == str(len(snaps) - 1)
    for index in (0, 3):
        slider.fill(str(index))
        p.wait_until(lambda i=index: p.attr("#emb-chart", "data-step") == str(snaps[i]["step"]),
                     what="a snapshot")  # fmt: skip
        points = p.page.eval_on_selector_all(
            "#emb-chart circle", "cs => cs.map(c => [c.dataset.token, +c.dataset.x, +c.dataset.y])")
        assert points == [[lab, *pt] for lab, pt in zip(snaps[index]["labels"],
                                                         snaps[index]["points"], strict=True)]
        boxes = p.page.evaluate(LABEL_BOXES)
        assert len(boxes) == 27
        for i, a in enumerate(boxes):  # no two labels overlap
            for b in boxes[i + 1:]:
                apart = a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2]
                assert apart, (a, b)
    p.page.click("#emb-play")  # replay to the latest
    p.wait_until(lambda: p.attr("#emb-chart", "data-step") == "15", what="the replay")
    p.wait_until(lambda: p.page.inner_text("#emb-play") == "▶ Replay", what="its end")
    texts = p.page.locator("#emb-chart text.axis-title").all_text_contents()
    assert any("principal component" in t for t in texts)
    p.check_layout("embeddings")
    p.shot("embeddings")


# --- the autograd graph ------------------------------------------------------------------------


def test_autograd_graph_is_named_and_keeps_the_clicked_node_in_view(page, studio):
    server = studio()
    p = page(server)
    p.tab("graph")
    p.wait_until(lambda: p.page.locator("#graph button.gnode.focus").count() == 1, what="graph")
    clicked = []
    for _ in range(12):  # down from the loss to a weight, one input at a time
        names = p.page.locator("#graph button.gnode .gname").all_text_contents()
        assert all(name not in ("*", "+", "pow", "") for name in names)
        inputs = p.page.locator("#graph .gcol.inputs button.gnode")
        if not inputs.count():
            break
        ops = [inputs.nth(i).get_attribute("data-op") for i in range(inputs.count())]
        pick = ops.index("weight") if "weight" in ops else next(
            i for i, op in enumerate(ops) if op != "constant")
        node = inputs.nth(pick)
        node_id = node.get_attribute("data-id")
        node.click()
        p.wait_until(lambda i=node_id: (p.attr("body", "data-graph") or "").endswith(f"#{i}"),
                     what="the focus")  # fmt: skip
        clicked.append(node_id)
        focus = p.page.locator("#graph button.gnode.focus")
        assert focus.get_attribute("data-id") == node_id
        box = focus.bounding_box()
        width, height = VIEWPORTS[p.viewport]
        assert 0 <= box["y"] and box["y"] + box["height"] <= height  # kept in view
        assert 0 <= box["x"] and box["x"] + box["width"] <= width
        # no blank band: the graph is no taller than its columns laid out
        cols = [c.bounding_box() for c in p.page.locator("#graph .gcol").all() if c.is_visible()]
        span = max(c["y"] + c["height"] for c in cols) - min(c["y"] for c in cols)
        assert p.page.locator("#graph").bounding_box()["height"] <= span + 2
        shot = p.shots / f"{p.viewport}-graph.png"
        if focus.get_attribute("data-op") == "Σ" and not shot.exists():
            p.check_layout("graph")
            p.shot("graph")  # a sum and its terms: the picture for the README
        if focus.get_attribute("data-op") == "weight":
            break
    assert p.page.locator("#graph button.gnode.focus").get_attribute("data-op") == "weight"
    assert p.page.locator("#graph-path button").count() == len(clicked) + 1
    assert "update = −lr · m̂ / (√v̂ + ε)" in p.page.inner_text("#adam")
    widths = {float(w) for w in p.page.eval_on_selector_all(
        "#graph-edges path.edge", "es => es.map(e => e.getAttribute('stroke-width'))")}
    assert widths  # links drawn, as thick as their gradient
    # and each node's bar grows with the size of its gradient
    bars = p.page.eval_on_selector_all(
        "#graph button.gnode:visible",
        "ns => ns.map(n => [Math.abs(+n.dataset.grad), n.querySelector('.gbar').offsetWidth])")
    bars.sort()
    assert all(a[1] <= b[1] + 1 for a, b in zip(bars, bars[1:])), bars
    p.check_layout("graph")
    p.page.locator("#graph-path button").first.click()  # back to the loss
    p.wait_until(lambda: p.page.locator("#graph-path button").count() == 1, what="the loss")
    assert p.page.locator("#graph button.gnode.focus .gname").inner_text().startswith("loss@0")


# --- sampling: the report, busy and cancel, errors in the page's words ---------------------------


def test_sample_report_busy_cancel_and_errors(page, studio):
    server = studio()
    p = page(server)
    p.tab("sample")
    assert "novel" in p.page.inner_text("#view-sample .explain").lower()
    p.page.fill("#s-count", "12")
    p.page.click("#btn-sample")
    p.wait_until(lambda: p.page.locator("#sample-list li").count() == 12, what="samples")
    assert p.page.locator("#sample-report tr").count() >= 7
    assert p.page.locator("#view-sample .novel-key").first.is_visible()
    p.check_layout("sample")
    p.shot("sample")
    # a sample opens in Look inside
    name = p.page.locator("#sample-list li").first.inner_text()
    p.page.locator("#sample-list li").first.click()
    p.wait_until(lambda: p.attr("body", "data-inside") == f"{name}@1", what="look inside")
    assert p.page.locator("#view-inside").is_visible()
    p.tab("sample")
    # a draw that runs long: busy everywhere, then cancelled
    p.page.fill("#s-count", "200")
    p.page.fill("#s-topk", "1")
    p.page.fill("#s-max", "0")
    p.page.click("#btn-sample")
    p.wait_until(lambda: p.page.locator("#btn-cancel").is_visible(), what="busy")
    assert p.attr("body", "data-sampling") == "1" and p.page.is_disabled("#btn-sample")
    p.page.click("#btn-cancel")
    p.wait_until(lambda: p.attr("body", "data-sampling") == "0", what="cancelled")
    p.wait_until(lambda: "cancelled" in p.page.inner_text("#sample-report"), what="the report")
    # mistakes, in the page's own terms
    p.page.fill("#s-topk", "")
    p.page.fill("#s-max", "")
    p.page.fill("#s-min", "20")
    p.provoke_400()
    p.page.click("#btn-sample")
    p.wait_until(lambda: p.page.locator("#banner").is_visible(), what="the error")
    message = p.page.inner_text("#banner")
    assert "min length 20 cannot be reached" in message and "--" not in message
