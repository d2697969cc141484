"""microgpt studio: the real engine, training live in the browser, with the CLI's numbers.

`server.py` is a standard-library HTTP server (ThreadingHTTPServer + server-sent events) that
serves the packaged page in `static/`; `session.py` drives the same `Trainer.step` as
`microgpt train` on a background thread; `views.py` computes what the page shows (attention,
probabilities, embeddings, the autograd graph) from the engine; `adapters.py` is where the
studio meets code that other parts of microgpt may grow (run setup, validation, sampling).
"""
