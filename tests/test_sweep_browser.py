"""A sweep's report.html in real headless Chromium (Debian's `chromium` driven by Playwright):
it opens from the file alone, requests nothing, logs no error, and draws every trial.

Oracles: the sweep's own results.jsonl (trials, configs) and the browser's record of every
request and console message. Skipped, with the reason, where Playwright or /usr/bin/chromium
is missing (`.ci/run` installs both where it can). A screenshot is saved under pytest's tmp
dir.
"""

from __future__ import annotations

import json

from run_helpers import main_cli
from test_studio_browser import ARGS, CHROMIUM, _playwright

NAMES = "emma olivia ava isabella sophia charlotte mia amelia harper evelyn abigail emily".split()


def test_the_report_opens_offline_and_draws_every_trial(tmp_path):
    sync_playwright = _playwright()  # skips, saying why, without playwright or chromium
    data = tmp_path / "names.txt"
    data.write_text("\n".join(NAMES * 3) + "\n")
    out = tmp_path / "sweep"
    r = main_cli(["sweep", "--out", out, "--data", data, "--n-embd", "8", "--block-size", "8",
                  "--steps", "20", "--set", "learning_rate=0.01,0.03,0.1", "--set",
                  "n_head=2,4", "--seeds", "2", "--quiet"])  # fmt: skip
    assert r.returncode == 0, r.stderr
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    url = (out / "report.html").as_uri()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        errors, requests = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda q: requests.append(q.url))
        page.goto(url)
        page.wait_for_load_state("load")
        assert requests == [url]  # the page alone: no script, font or picture from elsewhere
        assert errors == []
        assert page.locator("figure svg").count() == 3  # curves, and one per swept key
        assert page.locator("polyline.trial").count() == len(results) == 12
        assert page.locator("#val_loss_learning_rate circle.seed").count() == 12
        assert page.locator("#val_loss_learning_rate circle.mean").count() == 6
        assert page.locator("#summary tbody tr").count() == 6
        assert page.locator("#best").inner_text() == r.stdout.strip().splitlines()[-1][6:]
        box = page.locator("#loss_curves svg").bounding_box()
        assert box["width"] > 600 and box["height"] > 300  # drawn, not collapsed
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
