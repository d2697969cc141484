"""microgpt studio: the real engine, training live in the browser, with the CLI's numbers.

`server.py` is the standard library's HTTP server made to hold up (backlog, read timeouts,
checked bodies; server-sent events), serving the packaged page in `static/`; `fields.py`
says what each request may carry; `runs.py` opens the run through the run library
(`runs.start`, `runs.resume`); `session.py` trains it on a background thread through
`train.run`, the CLI's loop, at the page's pace, and samples with `draw.Draw` on a copy of
the engine; `views.py` computes what the page shows (attention, probabilities, embeddings,
the autograd graph) from the engine, and `trace.py` is the reference forward pass traced
to name every Value.
"""
