"""microgpt studio: the real engine, training live in the browser, with the CLI's numbers.

`server.py` is a standard-library HTTP server (ThreadingHTTPServer + server-sent events) that
serves the packaged page in `static/`; `runs.py` sets up the run with `microgpt train`'s own
code (`cli.build_new_trainer`, `train.resume_trainer`); `session.py` trains it on a background
thread through `train.run`, the CLI's loop, and samples with `sample.Draw`; `views.py`
computes what the page shows (attention, probabilities, embeddings, the autograd graph) from
the engine.
"""
