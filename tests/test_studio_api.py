"""microgpt studio's API, without a browser.

Oracles: `microgpt train --out D` with the same flags (its metrics.jsonl and the checkpoint
it saves after the same steps), a fresh engine built from that checkpoint, a hand-worked
layer-0 attention, numpy's SVD for the embedding projection, the engine's own gradients for
the autograd graph, and `sample.generate` for the sampler.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import math
import random
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from run_helpers import main_cli

from microgpt import checkpoint as ckpt_io
from microgpt.__main__ import build_parser
from microgpt.config import ModelConfig
from microgpt.data import load_docs
from microgpt.engine import EngineError, load_engine
from microgpt.evaluate import evaluate
from microgpt.flags import UsageError
from microgpt.init import init_params
from microgpt.sample import generate, probabilities
from microgpt.studio.cli import build_session
from microgpt.studio.server import StudioServer, split_host
from microgpt.studio.trace import reference_attention
from microgpt.tokenizer import Tokenizer

TINY = ["--n-embd", "8", "--n-head", "2", "--block-size", "8", "--seed", "7"]
STEPS = 30


def available_engines() -> list[str]:
    names = ["ref"]
    try:
        load_engine("numpy")
        names.append("numpy")
    except EngineError:
        pass
    return names


# --- a served studio ------------------------------------------------------------------------------


class Client:
    """HTTP against a running StudioServer, with the Host header a browser would send."""

    def __init__(self, server: StudioServer):
        self.server = server
        self.host, self.port = "127.0.0.1", server.port

    def request(self, method, path, body=None, headers=None, raw_body=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        hdrs = {"Host": f"127.0.0.1:{self.port}"}
        data = raw_body
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in hdrs.items():
            if v is not None:
                conn.putheader(k, v)
        if data is not None:
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        return resp.status, dict(resp.getheaders()), payload

    def get(self, path, **kw):
        status, headers, payload = self.request("GET", path, **kw)
        return status, headers, payload

    def post(self, path, body, **kw):
        status, _, payload = self.request("POST", path, body=body, **kw)
        return status, json.loads(payload)

    def events(self, until, last_event_id=None, timeout=120):
        """Read the SSE stream until `until(events)` is true; events are (id, kind, data)."""
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        head = f"GET /api/events HTTP/1.0\r\nHost: 127.0.0.1:{self.port}\r\n"
        if last_event_id is not None:
            head += f"Last-Event-ID: {last_event_id}\r\n"
        sock.sendall((head + "\r\n").encode())
        buf, events, header_done = b"", [], False
        try:
            while not until(events):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if not header_done:
                    if b"\r\n\r\n" not in buf:
                        continue
                    header, buf = buf.split(b"\r\n\r\n", 1)
                    assert b"text/event-stream" in header
                    header_done = True
                while b"\n\n" in buf:
                    block, buf = buf.split(b"\n\n", 1)
                    fields = dict(
                        line.split(": ", 1) for line in block.decode().splitlines() if ": " in line
                    )
                    if "event" in fields:
                        events.append(
                            (int(fields["id"]), fields["event"], json.loads(fields["data"]))
                        )
        finally:
            sock.close()
        return events


def studio_args(names_path, *extra):
    return build_parser().parse_args(
        ["studio", "--data", str(names_path), "--port", "0", "--steps", str(STEPS), *TINY, *extra]
    )


@contextlib.contextmanager
def serving():
    """Yields start(args) -> Client: a studio for these flags, served on a thread."""
    servers = []

    def start(args) -> Client:
        server = StudioServer(build_session(args), "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return Client(server)

    try:
        yield start
    finally:
        for server in servers:
            server.session.close()
            server.shutdown()
            server.server_close()


@pytest.fixture
def serve():
    with serving() as start:
        yield start


def finished(events):
    return any(kind == "status" and not data["running"] for _, kind, data in events)


def steps_done(n):
    return lambda events: sum(kind == "step" for _, kind, _ in events) >= n


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, names_path):
    """`microgpt train --out D` with the studio's flags, engine ref."""
    out = tmp_path_factory.mktemp("cli") / "run"
    r = main_cli(["train", "--engine", "ref", "--data", str(names_path), "--steps", str(STEPS),
                  *TINY, "--num-samples", "1", "--out", str(out)])  # fmt: skip
    assert r.returncode == 0, r.stderr
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return out, metrics


# --- the numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", available_engines())
def test_streamed_losses_equal_cli_metrics(serve, names_path, cli_run, engine):
    _, metrics = cli_run
    client = serve(studio_args(names_path, "--engine", engine, "--sample-every", "10"))
    status, state = client.post("/api/train", {"action": "start"})
    assert status == 200 and state["engine"] == engine
    events = client.events(finished)
    steps = [data for _, kind, data in events if kind == "step"]
    if engine == "ref":  # the same engine: every bit
        assert [s["loss"] for s in steps] == [m["loss"] for m in metrics]
    else:  # another engine: the parity tolerance
        for s, m in zip(steps, metrics, strict=True):
            assert s["loss"] == pytest.approx(m["loss"], rel=1e-10)
    assert [s["lr"] for s in steps] == [m["lr"] for m in metrics]
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))
    assert all(s["tokens_per_s"] > 0 for s in steps)
    # fresh samples and embeddings at steps 0, 10, 20, 30
    assert [d["step"] for _, k, d in events if k == "samples"] == [0, 10, 20, 30]
    assert [d["step"] for _, k, d in events if k == "embeddings"] == [0, 10, 20, 30]
    ids = [i for i, _, _ in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_look_inside_equals_the_checkpoint_engine(serve, names_path, cli_run):
    out, _ = cli_run
    client = serve(studio_args(names_path, "--engine", "ref"))
    client.post("/api/train", {"action": "start"})
    client.events(finished)

    # The engine a user would get from `microgpt train`'s checkpoint after the same steps.
    ckpt = ckpt_io.load(out / "model.safetensors")
    tok = ckpt.tokenizer
    engine = load_engine("ref")(ckpt.model, ckpt.optim, tok.vocab_size, ckpt.params)
    status, d = client.post("/api/inspect", {"text": "emma", "temperature": 0.7})
    assert status == 200 and d["step"] == STEPS == ckpt.step
    tokens = tok.doc_tokens("emma")
    inputs = tokens[:-1]
    assert d["tokens"] == ["BOS", "e", "m", "m", "a", "BOS"]

    assert d["attention"] == reference_attention(ckpt.params, ckpt.model, inputs)
    n = len(inputs)
    for layer in d["attention"]:
        for head in layer:
            assert [len(row) for row in head] == list(range(1, n + 1))  # causal: s <= t only
            for row in head:
                assert sum(row) == pytest.approx(1.0, abs=1e-12)
    logits = engine.forward(inputs)
    assert d["probs"] == [probabilities(row, 0.7) for row in logits]
    for row, am in zip(d["probs"], d["argmax"], strict=True):
        assert sum(row) == pytest.approx(1.0, abs=1e-12)
        assert am == max(range(len(row)), key=row.__getitem__)
    # the per-position losses average to the engine's loss of the word
    assert d["loss"] == pytest.approx(engine.loss([tokens]), rel=1e-12)
    # the temperature-1 probabilities of the targets give the per-position losses
    p1 = [probabilities(row, 1.0) for row in logits]
    for t, loss_t in enumerate(d["losses"]):
        assert loss_t == pytest.approx(-math.log(p1[t][tokens[t + 1]]), rel=1e-9)


def rmsnorm(x):
    ms = sum(v * v for v in x) / len(x)
    return [v / math.sqrt(ms + 1e-5) for v in x]


def test_attention_against_a_hand_computed_layer0(serve, names_path):
    """Before training, the weights are init_params after the shuffle: recompute layer 0's
    attention from them by hand (embeddings, two rmsnorms, q.k / sqrt(hs), softmax)."""
    client = serve(studio_args(names_path, "--engine", "ref"))
    status, d = client.post("/api/inspect", {"text": "ava", "temperature": 1.0})
    assert status == 200 and d["step"] == 0
    rng = random.Random(7)  # TINY's seed: shuffle first, then the weights
    docs, _ = load_docs(names_path, rng)
    tok = Tokenizer.from_docs(docs)
    model = ModelConfig(n_embd=8, n_head=2, block_size=8)
    params = {k: t.rows() for k, t in init_params(model, tok.vocab_size, rng).items()}
    inputs = [tok.BOS, *tok.encode("ava")]
    H, hs = model.n_head, model.head_dim
    xs = []
    for pos, t in enumerate(inputs):
        x = rmsnorm(
            rmsnorm([a + b for a, b in zip(params["wte"][t], params["wpe"][pos], strict=True)])
        )
        xs.append(x)
    mv = lambda W, x: [sum(w * v for w, v in zip(row, x, strict=True)) for row in W]
    q = [mv(params["layer0.attn_wq"], x) for x in xs]
    k = [mv(params["layer0.attn_wk"], x) for x in xs]
    for h in range(H):
        for t in range(len(inputs)):
            scores = [
                sum(q[t][h * hs + j] * k[s][h * hs + j] for j in range(hs)) / math.sqrt(hs)
                for s in range(t + 1)
            ]
            e = [math.exp(v - max(scores)) for v in scores]
            expected = [v / sum(e) for v in e]
            assert d["attention"][0][h][t] == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_embeddings_are_the_pca_of_wte(serve, names_path):
    np = pytest.importorskip("numpy")
    client = serve(studio_args(names_path, "--engine", "ref"))
    status, _, payload = client.get("/api/embeddings")
    d = json.loads(payload)
    wte = np.frombuffer(client.server.session.engine.parameters()["wte"].data, dtype=np.float64)
    wte = wte.reshape(len(d["labels"]), -1)
    x = wte - wte.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    expected = x @ vt[:2].T  # (V, 2), up to the sign of each component
    got = np.array(d["points"])
    for c in range(2):
        sign = np.sign(got[:, c] @ expected[:, c])
        np.testing.assert_allclose(got[:, c], sign * expected[:, c], rtol=1e-7, atol=1e-9)
    var = s**2 / (s**2).sum()
    np.testing.assert_allclose(d["explained"], var[:2], rtol=1e-7)
    assert d["labels"][-1] == "BOS"


def test_autograd_graph_matches_the_engine_gradients(serve, names_path):
    client = serve(studio_args(names_path, "--engine", "ref"))
    client.post("/api/train", {"action": "start"})
    client.events(steps_done(5))
    client.post("/api/train", {"action": "stop"})
    status, d = client.post("/api/graph", {"text": "emma", "position": 0})
    assert status == 200
    step = d["step"]
    ops = {op: n for op, n, _ in d["summary"]["ops"]}
    # hand count for one layer at position 0: one softmax per head over one key, one
    # softmax over the vocabulary, one log, 4 * n_embd ReLUs
    assert ops["exp"] == 2 * 1 + 27 and ops["log"] == 1 and ops["relu"] == 4 * 8
    nodes = {n["id"]: n for n in d["nodes"]}
    root = nodes[d["focus"]]
    assert root["id"] == d["summary"]["root"] and root["grad"] == 1.0
    assert root["name"] == "loss@0 = −log p('e')" and d["path"] == [root["id"]]
    log_p = nodes[root["children"][0]]
    assert log_p["name"] == "log p('e')@0" and log_p["op"] == "log"

    # Oracle: a second engine from the same weights, trained on the one-position sequence
    # BOS -> e, has gradients equal to the graph's weight leaves.
    session = client.server.session
    tok = session.run.trainer.tokenizer
    engine = load_engine("ref")(session.engine.config, session.engine.optim, tok.vocab_size,
                                session.engine.parameters())  # fmt: skip
    moments = session.engine.optimizer_state()
    engine.load_optimizer_state(*moments)
    loss = engine.forward_backward([tok.doc_tokens("emma")[:2]])
    assert root["data"] == loss  # the same Values, the same order: every bit
    grads = engine.gradients()
    graph = session._graph_cache[1]
    weights = [i for i, op in enumerate(graph.ops) if op == "weight"]
    for i in weights:
        name, r, c, _ = graph.param_names[id(graph.nodes[i])]
        assert graph.nodes[i].grad == grads[name].data[r * grads[name].shape[1] + c]
    assert len(weights) == sum(dict(d["summary"]["params"]).values())
    # every node a learner can reach is named by what it computes, not by a bare operator
    for i in graph.shown:
        v = graph.nodes[i]
        assert id(v) in graph.trace.names or id(v) in graph.param_names, graph.ops[i]
    # a Σ node is its terms' sum, added in order from 0 (so: bit for bit)
    sigma = next(i for i in graph.shown if id(graph.nodes[i]) in graph.trace.sums)
    total = 0
    for c in graph.children[sigma]:
        total = total + graph.nodes[c].data
    assert total == graph.nodes[sigma].data

    # focusing a weight: its Adam update is the reference engine's next adam_step
    w = weights[len(weights) // 2]
    status, e = client.post("/api/graph", {"text": "emma", "position": 0, "focus": w})
    assert status == 200 and e["step"] == step and e["focus"] == w
    path = e["path"]
    assert path[0] == root["id"] and path[-1] == w
    for parent, child in zip(path, path[1:]):
        assert child in graph.children[parent]
    a = e["adam"]
    name, r, c, label = graph.param_names[id(graph.nodes[w])]
    assert a["weight"] == label and a["t"] == step + 1
    engine.adam_step(a["lr"], a["t"])
    assert a["new"] == engine.parameters()[name].data[r * grads[name].shape[1] + c]
    assert a["grad"] == grads[name].data[r * grads[name].shape[1] + c]
    # what uses a node, and a node that is not in the graph
    shown = {n["id"]: n for n in e["nodes"]}
    assert all(w in shown[u]["children"] for u in e["used_by"])
    status, err = client.post("/api/graph", {"text": "emma", "position": 0, "focus": 10**8})
    assert status == 400 and "click a node" in err["error"]
    status, err = client.post("/api/graph", {"text": "emma", "position": 9})
    assert status == 400 and "pick 0 to 4" in err["error"]


def test_sample_endpoint(serve, names_path):
    client = serve(studio_args(names_path, "--engine", "ref"))
    session = client.server.session
    tok = session.run.trainer.tokenizer
    train_set = set(session.run.trainer.docs)
    # no prompt, no top-k: the CLI's sampler with the same seed
    status, d = client.post("/api/sample", {"count": 5, "temperature": 0.8, "seed": 3})
    assert status == 200
    rng = random.Random(3)
    expected = [tok.decode(generate(session.engine, tok, rng, 0.8)) for _ in range(5)]
    assert [s["text"] for s in d["samples"]] == expected
    r = d["report"]
    assert r["count"] == 5 and r["unique"] == len(set(expected))
    assert r["novel"] == sum(s not in train_set for s in expected)
    # log-prob per character: the engine's loss on each sample as a sequence (closing BOS
    # included when the model ended it; cut to the context as training cuts it)
    block = session.engine.config.block_size
    seqs = [tok.doc_tokens(s)[: block + 1] for s in expected]
    nll = sum(session.engine.loss([t]) * (len(t) - 1) for t in seqs)
    predicted = sum(len(t) - 1 for t in seqs)
    assert r["predicted"] == predicted
    assert r["logprob_per_char"] == pytest.approx(-nll / predicted, rel=1e-12)
    assert r["bits_per_char"] == pytest.approx(nll / predicted / math.log(2), rel=1e-12)
    # length filters: every kept sample within them, the rejected ones counted
    _, short = client.post("/api/sample", {"count": 5, "temperature": 1.0, "max_length": 4})
    assert all(len(s["text"]) <= 4 for s in short["samples"])
    assert short["report"]["drawn"] == 5 + sum(short["report"]["rejected"].values())
    # top-k 1 is greedy, whatever the temperature; a prompt is kept as the start
    _, greedy = client.post("/api/sample", {"count": 2, "temperature": 0, "prompt": "em"})
    _, top1 = client.post(
        "/api/sample", {"count": 2, "temperature": 1.5, "top_k": 1, "prompt": "em"}
    )
    assert [s["text"] for s in top1["samples"]] == [s["text"] for s in greedy["samples"]]
    assert all(s["text"].startswith("em") for s in greedy["samples"])
    # novel-only never returns a training document
    _, novel = client.post("/api/sample", {"count": 10, "temperature": 1.0, "novel": True})
    assert all(s["novel"] and s["text"] not in train_set for s in novel["samples"])
    # a user's mistake is a 400 with a message
    status, err = client.post("/api/sample", {"prompt": "É"})
    assert status == 400 and "vocabulary" in err["error"]
    status, err = client.post("/api/inspect", {"text": "emma", "temperature": 0})
    assert status == 400


def test_reset_repeats_the_run_and_events_resume(serve, names_path):
    client = serve(studio_args(names_path, "--engine", "ref"))
    first = client.events(lambda ev: len(ev) >= 3)
    assert [k for _, k, _ in first[:3]] == ["run", "samples", "embeddings"]
    client.post("/api/train", {"action": "start"})
    events = client.events(steps_done(4))
    client.post("/api/train", {"action": "stop"})
    losses = [d["loss"] for _, k, d in events if k == "step"][:4]
    # resume: after Last-Event-ID, exactly the later events
    last = events[2][0]
    resumed = client.events(lambda ev: len(ev) >= 2, last_event_id=last)
    assert [e[0] for e in resumed[:2]] == [events[3][0], events[4][0]]
    # reset: the same run again, from step 0; an old Last-Event-ID gets the new run's start
    status, state = client.post("/api/train", {"action": "reset"})
    assert status == 200 and state["step"] == 0 and not state["running"]
    after = client.events(lambda ev: len(ev) >= 1, last_event_id=last)
    assert after[0][1] == "run" and after[0][0] > events[-1][0]
    client.post("/api/train", {"action": "start"})
    again = client.events(steps_done(4), last_event_id=after[0][0])
    assert [d["loss"] for _, k, d in again if k == "step"][:4] == losses


def test_settings_from_the_page_are_a_cli_run(serve, names_path, tmp_path, cli_env):
    """Settings edited in the page become a RunSpec started by runs.start: the streamed
    losses are `microgpt train`'s metrics.jsonl with the same flags."""
    settings = {"steps": 12, "learning_rate": 0.02, "n_embd": 12, "n_layer": 2, "n_head": 3,
                "block_size": 6, "seed": 3}  # fmt: skip
    out = tmp_path / "run"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    r = main_cli(["train", "--engine", "ref", "--data", str(names_path), *flags,
                  "--num-samples", "1", "--out", str(out)], cli_env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    client = serve(studio_args(names_path, "--engine", "ref"))
    status, state = client.post("/api/settings", settings)
    assert status == 200 and state["settings"] == settings and state["run"] == 2
    cli_model = json.loads((out / "config.json").read_text())["model"]
    assert state["step"] == 0 and all(cli_model[k] == v for k, v in state["model"].items())
    client.post("/api/train", {"action": "start"})
    events = client.events(finished, last_event_id=None)
    assert [d["loss"] for _, k, d in events if k == "step"] == [m["loss"] for m in metrics]
    # null keeps a setting; reset repeats the new run, not the first one
    status, again = client.post("/api/settings", {"steps": None, "seed": None})
    assert status == 200 and again["settings"] == settings and again["run"] == 3


def test_a_diverged_run_is_explained_in_the_page_terms(serve, names_path):
    client = serve(studio_args(names_path, "--engine", "ref"))
    status, _ = client.post("/api/settings", {"learning_rate": 1.0})
    assert status == 200
    client.post("/api/train", {"action": "start"})
    events = client.events(finished)
    (error,) = [d["message"] for _, k, d in events if k == "train_error"]
    assert "diverged" in error and "learning rate" in error and "Settings" in error
    assert "--" not in error  # the page has no command-line flags


def test_step_once_pace_and_continue(serve, names_path):
    client = serve(studio_args(names_path, "--engine", "ref"))
    status, state = client.post("/api/train", {"action": "step"})
    assert status == 200
    events = client.events(finished)
    assert [d["step"] for _, k, d in events if k == "step"] == [1]
    _, _, payload = client.get("/api/state")
    state = json.loads(payload)
    assert state["step"] == 1 and not state["running"] and state["elapsed_s"] > 0
    # a pace: the steps per second the page shows keep to it (a busy machine only slows)
    status, state = client.post("/api/pace", {"steps_per_s": 10})
    assert status == 200 and state["steps_per_s_pace"] == 10
    client.post("/api/train", {"action": "start"})
    last = events[-1][0]
    paced = client.events(steps_done(6), last_event_id=last)
    client.post("/api/train", {"action": "stop"})
    steps = [d for _, k, d in paced if k == "step"]
    assert [d["step"] for d in steps][:6] == [2, 3, 4, 5, 6, 7]
    assert all(d["steps_per_s"] is None or d["steps_per_s"] <= 10 * 1.2 for d in steps)
    assert steps[-1]["elapsed_s"] > steps[0]["elapsed_s"]
    # full speed to the set steps; then Step needs more steps first, and Continue adds them
    client.post("/api/pace", {"steps_per_s": None})
    client.post("/api/train", {"action": "start"})
    client.events(lambda ev: finished(ev) and ev[-1][2]["step"] == STEPS,
                  last_event_id=paced[-1][0])  # fmt: skip
    status, err = client.post("/api/train", {"action": "step"})
    assert status == 400 and "Continue" in err["error"]
    status, state = client.post("/api/continue", {"steps": 3})
    assert status == 200 and state["num_steps"] == STEPS + 3


def test_checkpoint_opens_where_training_ended(serve, names_path, cli_run):
    out, _ = cli_run
    args = build_parser().parse_args(["studio", "--checkpoint", str(out / "model.safetensors"),
                                      "--engine", "ref", "--port", "0"])  # fmt: skip
    client = serve(args)
    _, _, payload = client.get("/api/state")
    state = json.loads(payload)
    assert state["step"] == STEPS and state["num_steps"] == STEPS and state["can_train"]
    # a checkpoint's run keeps its shape: only its steps can change in the page
    status, err = client.post("/api/settings", {"n_embd": 16, "n_head": 2})
    assert status == 400 and "only steps can change" in err["error"]
    status, err = client.post("/api/settings", {"steps": STEPS - 1})
    assert status == 400 and f"at least the {STEPS}" in err["error"]
    ckpt = ckpt_io.load(out / "model.safetensors")
    _, d = client.post("/api/inspect", {"text": "ava", "temperature": 1.0})
    tok = ckpt.tokenizer
    assert d["attention"] == reference_attention(ckpt.params, ckpt.model,
                                                 tok.doc_tokens("ava")[:-1])  # fmt: skip


def test_checkpoint_continues_as_cli_resume(serve, names_path, cli_run, tmp_path, cli_env):
    """Training on from a checkpoint in the studio gives `microgpt train --resume`'s losses."""
    out, _ = cli_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    r = main_cli(["train", "--resume", str(run), "--steps", str(STEPS + 5), "--engine", "ref",
                  "--data", str(names_path)], cli_env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected = [m["loss"] for m in metrics if "loss" in m][STEPS:]
    args = build_parser().parse_args(["studio", "--checkpoint", str(out / "model.safetensors"),
                                      "--engine", "ref", "--port", "0",
                                      "--steps", str(STEPS + 5)])  # fmt: skip
    client = serve(args)
    client.post("/api/train", {"action": "start"})
    events = client.events(finished)
    steps = [d for _, k, d in events if k == "step"]
    assert [d["step"] for d in steps] == list(range(STEPS + 1, STEPS + 6))
    assert [d["loss"] for d in steps] == expected
    # a new run trained to its steps, then continued past them in the page: the same
    client = serve(studio_args(names_path, "--engine", "ref"))
    client.post("/api/train", {"action": "start"})
    first = client.events(finished)
    client.post("/api/continue", {"steps": 5})
    more = client.events(finished, last_event_id=first[-1][0])
    assert [d["loss"] for _, k, d in more if k == "step"] == expected


def test_checkpoint_without_data_or_adam_state_is_inspect_only(serve, names_path, cli_run,
                                                               tmp_path):  # fmt: skip
    out, _ = cli_run
    ckpt = ckpt_io.load(out / "model.safetensors")
    moved = dataclasses.replace(
        ckpt, record=dataclasses.replace(ckpt.record, data_path=str(tmp_path / "gone")))
    weights_only = dataclasses.replace(ckpt, adam_m=None, adam_v=None)
    for name, c in [("moved", moved), ("weights", weights_only)]:
        path = tmp_path / f"{name}.safetensors"
        ckpt_io.save(path, c)
        client = serve(build_parser().parse_args(["studio", "--checkpoint", str(path),
                                                  "--engine", "ref", "--port", "0"]))  # fmt: skip
        _, _, payload = client.get("/api/state")
        state = json.loads(payload)
        assert not state["can_train"] and state["step"] == STEPS, name
        _, d = client.post("/api/sample", {"count": 3, "novel": True, "seed": 1})
        assert len(d["samples"]) == 3  # the checkpoint's fingerprint: novel-only still works


def test_checkpoint_refuses_flags_that_shape_the_run(names_path, cli_run):
    out, _ = cli_run
    for flags in (["--seed", "3"], ["--n-embd", "16"], ["--val-fraction", "0.1"]):
        args = build_parser().parse_args(["studio", "--checkpoint", str(out / "model.safetensors"),
                                          "--engine", "ref", *flags])  # fmt: skip
        with pytest.raises(UsageError, match=f"{flags[0]} cannot change"):
            build_session(args)


# --- what the server refuses ----------------------------------------------------------------------


def test_host_header_rules(serve, names_path):
    client = serve(studio_args(names_path, "--engine", "ref"))
    port = client.port
    ok = [f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"]
    bad = [f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", "127.0.0.1",
           f"localhost.evil.example:{port}", f"127.0.0.1.nip.io:{port}", "",
           f"::{port}"]  # fmt: skip
    for host in ok:
        status, _, _ = client.get("/api/state", headers={"Host": host})
        assert status == 200, host
    for host in bad:
        for path in ("/", "/api/state", "/api/events"):
            status, _, _ = client.get(path, headers={"Host": host})
            assert status == 403, (host, path)
        status, _ = client.post("/api/train", {"action": "start"}, headers={"Host": host})
        assert status == 403
    status, _, _ = client.get("/api/state", headers={"Host": None})  # no Host at all
    assert status == 403
    assert not client.server.session.running


def test_cross_origin_posts_are_refused(serve, names_path):
    client = serve(studio_args(names_path, "--engine", "ref"))
    port = client.port
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": f"http://evil.example:{port}"},
        {"Origin": "null"},
        {"Origin": f"https://127.0.0.1:{port + 1}"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        status, body = client.post("/api/train", {"action": "start"}, headers=headers)
        assert status == 403, headers
        assert "refused" in body["error"]
    # a form post (no JSON) is refused before anything runs
    status, _, _ = client.request(
        "POST",
        "/api/train",
        raw_body=b"action=start",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 415
    status, _, _ = client.request(
        "POST", "/api/train", raw_body=b"{bad", headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert not client.server.session.running
    # the same origin is fine
    status, state = client.post("/api/train", {"action": "stop"},
                                headers={"Origin": f"http://127.0.0.1:{port}",
                                         "Sec-Fetch-Site": "same-origin"})  # fmt: skip
    assert status == 200 and not state["running"]


def test_only_packaged_files_are_served(serve, names_path):
    client = serve(studio_args(names_path, "--engine", "ref"))
    static = Path(__file__).resolve().parents[1] / "src/microgpt/studio/static"
    for path, name in [("/", "index.html"), ("/static/app.js", "app.js"),
                       ("/static/style.css", "style.css"), ("/?x=1", "index.html")]:  # fmt: skip
        status, headers, payload = client.get(path)
        assert status == 200 and payload == (static / name).read_bytes()
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "http" not in csp and "unsafe" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
    for path in ["/static/../server.py", "/static/%2e%2e/server.py", "/static/server.py",
                 "/../../etc/passwd", "/etc/passwd", "/static/", "/static", "/api/nope",
                 "/static/app.js/.", "/static/APP.JS", "/static/app.js%00"]:  # fmt: skip
        status, headers, _ = client.get(path)
        assert status == 404, path
        assert "Content-Security-Policy" in headers
    status, _ = client.post("/api/nope", {})
    assert status == 404


def test_split_host():
    assert split_host("127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert split_host("[::1]:80") == ("::1", 80)
    assert split_host("Localhost") == ("localhost", None)
    assert split_host("a:b") == ("", None)


# --- the command ----------------------------------------------------------------------------------


def test_command_prints_its_url_and_serves(names_path, cli_env):
    cmd = [sys.executable, "-m", "microgpt", "studio", "--engine", "ref", "--data",
           str(names_path), "--port", "0", *TINY]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env)  # fmt: skip
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        port = int(url.rsplit(":", 1)[1].rstrip("/"))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/api/state")
        state = json.loads(conn.getresponse().read())
        assert state["engine"] == "ref" and state["model"]["n_embd"] == 8
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()


def test_command_errors_are_one_line(names_path, cli_env):
    base = ["studio", "--engine", "ref", "--data", str(names_path), *TINY]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        for extra, needle in [
            (["--port", "70000"], "--port"),
            (["--port", str(taken)], "--port 0"),
            (["--port", "0", "--sample-every", "0"], "--sample-every"),
            (["--port", "0", "--n-head", "3"], "divisible"),
        ]:
            r = main_cli(base + extra, cli_env)
            assert r.returncode == 2, (extra, r.stderr)
            lines = r.stderr.strip().splitlines()
            assert (
                len(lines) == 1 and lines[0].startswith("microgpt: error: ") and needle in lines[0]
            )


def test_val_loss_is_the_held_out_tail(serve, names_path, cli_run):
    """With --val-fraction the last documents of the shuffled list are held out; the first
    steps train on the same documents as the CLI run, so at step 30 the val loss equals the
    CLI checkpoint's loss on those documents."""
    out, metrics = cli_run
    client = serve(studio_args(names_path, "--engine", "ref", "--val-fraction", "0.0005",
                               "--val-every", "15"))  # fmt: skip
    _, _, payload = client.get("/api/state")
    n_val = json.loads(payload)["num_val_docs"]
    assert n_val == int(32033 * 0.0005)
    client.post("/api/train", {"action": "start"})
    events = client.events(finished)
    assert [d["loss"] for _, k, d in events if k == "step"] == [m["loss"] for m in metrics]
    val = [d for _, k, d in events if k == "val"]
    assert [d["step"] for d in val] == [15, 30]
    docs, _ = load_docs(names_path, random.Random(7))
    ckpt = ckpt_io.load(out / "model.safetensors")
    engine = load_engine("ref")(ckpt.model, ckpt.optim, len(ckpt.uchars) + 1, ckpt.params)
    expected = evaluate(engine, ckpt.tokenizer, docs[-n_val:]).loss
    assert val[-1]["loss"] == pytest.approx(expected, rel=1e-12)


def test_attention_falls_back_to_the_traced_reference_forward():
    """An engine without `attention` (the reference engine keeps its weights to itself) still
    gets heatmaps: the traced reference forward's, on the same weights. The oracle is the
    NumPy engine's attention, computed independently from them."""
    from microgpt.config import OptimConfig
    from microgpt.studio import views

    tok = Tokenizer.from_docs(["emma", "ava", "olivia"])
    model = ModelConfig(n_embd=8, n_head=2, block_size=8)
    params = init_params(model, tok.vocab_size, random.Random(0))
    ref = load_engine("ref")(model, OptimConfig(), tok.vocab_size, params)
    d = views.look_inside(ref, tok, "ava", 1.0)
    expected = load_engine("numpy")(model, OptimConfig(), tok.vocab_size, params).attention(
        tok.doc_tokens("ava")[:-1]
    )
    assert d["attention_engine"] == "ref"
    for layer, layer_np in zip(d["attention"], expected, strict=True):
        for head, head_np in zip(layer, layer_np, strict=True):
            for row, row_np in zip(head, head_np, strict=True):
                assert row == pytest.approx(row_np, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("preset", ["final", "first"])
@pytest.mark.parametrize("n_layer", [1, 2])
def test_the_traced_forward_is_the_reference_forward_bit_for_bit(preset, n_layer):
    """studio.trace.traced_gpt repeats ref.model.gpt to record what it sees; its logits are
    gpt's exactly, so the attention it records is the reference engine's."""
    from microgpt.config import get_preset
    from microgpt.ref.model import gpt
    from microgpt.studio.trace import Trace, traced_gpt, value_state_dict

    model = dataclasses.replace(get_preset(preset).model, n_layer=n_layer, n_embd=8, n_head=2)
    params = init_params(model, 7, random.Random(n_layer))
    a_sd, b_sd = value_state_dict(params), value_state_dict(params)
    a_kv = [[] for _ in range(n_layer)], [[] for _ in range(n_layer)]
    b_kv = [[] for _ in range(n_layer)], [[] for _ in range(n_layer)]
    trace = Trace.empty(model)
    for pos, tok in enumerate([6, 1, 2, 3, 1, 0]):
        want = [v.data for v in gpt(tok, pos, *a_kv, a_sd, model)]
        got = [v.data for v in traced_gpt(tok, pos, *b_kv, b_sd, model, trace)]
        assert got == want
    assert [len(rows) for rows in trace.attention[0]] == [6, 6]


@pytest.mark.parametrize("preset", ["final", "first"])
def test_the_traced_losses_are_the_reference_losses_bit_for_bit(preset):
    """studio.trace.traced_sequence_losses names every Value; its losses and every
    gradient are ref.model.sequence_losses' exactly."""
    from microgpt.config import get_preset
    from microgpt.ref.model import sequence_losses
    from microgpt.studio.trace import Trace, traced_sequence_losses, value_state_dict

    model = dataclasses.replace(get_preset(preset).model, n_layer=2, n_embd=8, n_head=2)
    params = init_params(model, 7, random.Random(5))
    tokens = [6, 1, 2, 3, 1, 0, 6]
    a_sd, b_sd = value_state_dict(params), value_state_dict(params)
    want = sequence_losses(tokens, a_sd, model)
    got = traced_sequence_losses(tokens, b_sd, model, Trace.empty(model))
    assert [v.data for v in got] == [v.data for v in want]
    want[-1].backward()
    got[-1].backward()
    for name in a_sd:
        assert [p.grad for row in b_sd[name] for p in row] == [
            p.grad for row in a_sd[name] for p in row
        ]


def test_event_log_resume_rules():
    from microgpt.studio.session import EventLog

    log = EventLog()
    log.emit("run", {"run": 1}, new_run=True)
    for i in range(3):
        log.emit("step", {"step": i + 1})
    assert [e[0] for e in log.since(None)] == [1, 2, 3, 4]
    assert [e[0] for e in log.since(2)] == [3, 4]
    assert log.since(4) == []
    # a browser that saw a later id (a restarted server) gets the whole run again
    assert [e[0] for e in log.since(99)] == [1, 2, 3, 4]
    log.emit("run", {"run": 2}, new_run=True)  # reset: ids keep growing
    assert [(e[0], e[1]) for e in log.since(3)] == [(5, "run")]
    assert log.wait(5, timeout=0.01) == []


def test_loopback_hosts():
    from microgpt.studio.server import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    assert not is_loopback("example.com")
