"""The Python API: load a checkpoint, then sample, report and evaluate.

>>> import microgpt
>>> model = microgpt.load("runs/names/model.safetensors")          # doctest: +SKIP
>>> model.sample(5, prompt="ma", novel=True, seed=1)               # doctest: +SKIP
['maria', 'maylen', ...]

The same machinery as `microgpt sample` / `microgpt eval`; the engine named is imported
only when `load` is called. Standard library only (the engine may not be).
"""

from __future__ import annotations

import os
import random

from . import checkpoint as ckpt_io
from .data import read_text, split_documents
from .engine import Engine, load_engine
from .evaluate import Evaluation, evaluate
from .fingerprint import METADATA_KEY, Fingerprint, FingerprintError
from .sample import Draw, Report, Sample, SampleConfig, make_report
from .tokenizer import TokenizerError


class Model:
    """A checkpoint's model on an engine, with the random stream sampling continues."""

    def __init__(self, ckpt: ckpt_io.Checkpoint, engine: Engine, fingerprint: Fingerprint | None):
        self.checkpoint = ckpt
        self.engine = engine
        self.tokenizer = ckpt.tokenizer
        self.fingerprint = fingerprint
        # Without a seed, sampling continues the run's saved random state, so the first
        # samples equal the ones `microgpt train` printed after training.
        self.rng = ckpt.rng()

    def draw(
        self,
        num_samples: int | None = None,
        *,
        prompt: str = "",
        temperature: float | None = None,
        top_k: int | None = None,
        max_new_tokens: int | None = None,
        novel: bool = False,
        min_length: int | None = None,
        max_length: int | None = None,
        max_tries: int | None = None,
        seed: int | None = None,
    ) -> Draw:
        """A `Draw` (iterable of `Sample`s, with `tries` and `complete`), not yet run.

        Defaults (num_samples, temperature) are the training run's: 20 samples at 0.5.
        """
        train = self.checkpoint.train
        config = SampleConfig(
            num_samples=train.num_samples if num_samples is None else num_samples,
            temperature=train.temperature if temperature is None else temperature,
            top_k=top_k,
            prompt=prompt,
            max_new_tokens=max_new_tokens,
            novel=novel,
            min_length=min_length,
            max_length=max_length,
            max_tries=max_tries,
        )
        rng = self.rng if seed is None else random.Random(seed)
        return Draw(self.engine, self.tokenizer, rng, config, self.fingerprint)

    def sample(self, num_samples: int | None = None, **kwargs) -> list[str]:
        """The samples' texts; keyword arguments as `draw`. May hold fewer than asked when
        filters (novel, min_length, max_length) rejected every allowed try."""
        return [s.text for s in self.draw(num_samples, **kwargs).run()]

    def report(self, samples: list[Sample] | Draw) -> Report:
        """Novelty, duplicates, lengths beside the training data's, log-prob per character
        (and, for a Draw, how many tries the filters rejected)."""
        if isinstance(samples, Draw):
            return make_report(samples.samples, self.fingerprint, samples.tries, samples.rejected)
        return make_report(samples, self.fingerprint)

    def evaluate(
        self,
        data: str | os.PathLike | list[str],
        doc_mode: str | None = None,
        batch_size: int = 32,
    ) -> Evaluation:
        """Loss and bits per character over a file's documents (or a list of documents).

        `doc_mode` (lines, paragraphs, text) defaults to the one the model was trained with.
        """
        if isinstance(data, list):
            docs = data
        else:
            mode = doc_mode or self.checkpoint.extra.get("doc_mode", "lines")
            docs = split_documents(read_text(data)[0], mode)
        try:
            return evaluate(self.engine, self.tokenizer, docs, batch_size=batch_size)
        except TokenizerError as e:
            where = "the documents" if isinstance(data, list) else str(data)
            raise TokenizerError(f"{where}: {e}; evaluate on text like the training data") from None


def load(
    path: str | os.PathLike, engine: str = "numpy", dtype: str = "float64", **engine_kwargs
) -> Model:
    """Load a checkpoint onto the named engine (numpy by default; ref, torch).

    `engine_kwargs` go to the engine's constructor (e.g. device="cuda" for torch)."""
    ckpt = ckpt_io.load(path)
    engine_cls = load_engine(engine)
    fingerprint = None
    if METADATA_KEY in ckpt.extra:
        try:
            fingerprint = Fingerprint.from_json(ckpt.extra[METADATA_KEY])
        except FingerprintError as e:
            raise ckpt_io.CheckpointError(f"{path}: {e}") from None
    eng = engine_cls(
        ckpt.model, ckpt.optim, ckpt.tokenizer.vocab_size, ckpt.params, dtype=dtype,
        **engine_kwargs,
    )
    return Model(ckpt, eng, fingerprint)
