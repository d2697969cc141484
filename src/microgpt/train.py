"""The training loop, once for every engine. Standard library only.

A `Trainer` owns what the original program keeps at top level: the run's random generator,
the shuffled documents, the tokenizer and the step counter. It hands the engine one batch
per step, applies the learning-rate schedule and asks for the Adam update. The CLI, the
studio and the tests all drive the same `Trainer.step`; `run` is the loop around it
(evaluation, checkpoints, stopping) that the CLI uses, with hooks for everything it writes.

Documents longer than the context (`--doc-mode paragraphs` or `text`) are trained on random
windows drawn from a second generator, `window_rng`, seeded from the run's seed. It is
separate so that the original's random stream (shuffle, weights, samples) is untouched, and
its state is saved in checkpoints so that a resumed run draws the same windows.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from . import checkpoint as ckpt_io
from .config import ModelConfig, OptimConfig, TrainConfig
from .data import Documents, characters
from .engine import Engine
from .evaluate import Evaluation, evaluate
from .init import init_params
from .schedule import learning_rate
from .tokenizer import Tokenizer, TokenizerError


class TrainingError(Exception):
    """A run that cannot go on (its loss, weights or Adam moments became NaN or infinite)."""


def as_documents(docs) -> Documents:
    """Documents as data.Documents (a list of strings is packed into one)."""
    return docs if isinstance(docs, Documents) else Documents.from_strings(docs)


def window_rng_for(seed: int) -> random.Random:
    """The generator of random windows, derived from the run's seed (a str seed is hashed
    with SHA-512 by `random.seed`, so it is the same on every Python and machine)."""
    return random.Random(f"microgpt-windows-{seed}")


@dataclass
class StepResult:
    step: int  # 1-based: the number of steps completed after this one
    loss: float
    lr: float
    tokens: int = 0  # tokens predicted in this step (for tokens/s)


class Trainer:
    def __init__(
        self,
        engine: Engine,
        tokenizer: Tokenizer,
        docs: Sequence[str],
        optim: OptimConfig,
        train: TrainConfig,
        rng: random.Random,
        step: int = 0,
        preset: str = "final",
        record: ckpt_io.RunRecord | None = None,
        val_docs: Sequence[str] | None = None,
        window_rng: random.Random | None = None,
        best_val_loss: float | None = None,
    ):
        self.engine = engine
        self.tokenizer = tokenizer
        # the documents, compactly (data.Documents: a sequence of str to anyone reading them)
        self.docs = as_documents(docs)  # training documents
        self.val_docs = as_documents(val_docs or [])  # held-out documents (--val-fraction)
        self.optim = optim
        self.train = train
        self.rng = rng
        self.window_rng = window_rng if window_rng is not None else window_rng_for(train.seed)
        self.step_count = step  # completed steps
        self.preset = preset
        # what the checkpoints record beside the weights (data file, loop options, ...)
        self.record = record or ckpt_io.RunRecord()
        self.best_val_loss = best_val_loss  # lowest (finite) validation loss so far
        # set while the record's fingerprint of the training documents is still to be made:
        # what makes it (documents -> fingerprint JSON)
        self.make_fingerprint: Callable[[Sequence[str]], str] | None = None

    def _tokens(self, i: int, lo: int, hi: int) -> list[int]:
        """Tokens lo..hi-1 of training document i's [BOS] + doc + [BOS], made from its
        characters: a `--doc-mode text` document is the whole file, and only the window a
        step trains on is ever tokenized."""
        return self.docs.tokens(i, lo, hi, self.tokenizer.code_ids, self.tokenizer.BOS)

    @property
    def model(self) -> ModelConfig:
        return self.engine.config

    @property
    def done(self) -> bool:
        return self.step_count >= self.train.num_steps

    def batch(self, step: int) -> list[list[int]]:
        """The token sequences of 0-based `step`: documents step*B .. step*B+B-1 (cyclic).

        Each is [BOS] + doc + [BOS]. In `lines` mode it is cut to block_size + 1 tokens as
        the original's `n = min(block_size, len(tokens) - 1)` does; in the other modes a
        longer document gives a random window of block_size + 1 tokens (from `window_rng`,
        so call this once per step: `step` does).
        """
        B, block_size = self.train.batch_size, self.model.block_size
        windows = self.train.doc_mode != "lines"
        out = []
        for b in range(B):
            i = (step * B + b) % len(self.docs)
            n_tokens = self.docs.length(i) + 2  # [BOS] + doc + [BOS]
            if windows and n_tokens > block_size + 1:
                start = self.window_rng.randrange(n_tokens - block_size)
                out.append(self._tokens(i, start, start + block_size + 1))
                continue
            n = min(block_size, n_tokens - 1)
            out.append(self._tokens(i, 0, n + 1))
        return out

    def step(self) -> StepResult:
        """Train one step: forward, backward, Adam with the scheduled learning rate.

        A loss that is NaN or infinite raises TrainingError before the update, so the
        weights stay those of the last good step.
        """
        step = self.step_count
        lr_t = learning_rate(self.optim, step, self.train.num_steps)
        why = ""
        batch = self.batch(step)
        try:
            loss = self.engine.forward_backward(batch)
        except (OverflowError, ZeroDivisionError, ValueError) as e:
            # Python floats raise where arrays give inf/NaN: the scalar engine's blow-up
            # shows up as `math range error`, `math domain error` (log 0) or a division by 0.
            if isinstance(e, ValueError) and "math domain error" not in str(e):
                raise
            loss, why = math.nan, f" ({e})"
        if not math.isfinite(loss):
            raise TrainingError(
                f"the loss became {loss} at step {step + 1}{why}; training diverged. Try a "
                f"lower --learning-rate (this run: {self.optim.learning_rate:g}) or a smaller "
                "model"
            )
        self.engine.adam_step(lr_t, step + 1)
        self.step_count = step + 1
        tokens = sum(len(seq) - 1 for seq in batch)
        return StepResult(step=step + 1, loss=loss, lr=lr_t, tokens=tokens)

    def steps(self, k: int) -> list[StepResult]:
        """Up to `k` steps in one engine call (Engine.train_steps): the same batches, learning
        rates and updates as `k` calls of `step`, without a Python round trip per step.

        Returns the steps done. Fewer than asked means a loss came out NaN or infinite: that
        step was not applied, and the next call should be `step`, which computes it again
        and raises TrainingError.
        """
        first, total = self.step_count, self.train.num_steps
        k = min(k, total - first)
        windows = self.window_rng.getstate()
        batches = [self.batch(first + i) for i in range(k)]
        lrs = [learning_rate(self.optim, first + i, total) for i in range(k)]
        losses = self.engine.train_steps(batches, lrs, first + 1)
        done = len(losses) - (1 if losses and not math.isfinite(losses[-1]) else 0)
        if done < k:  # the steps not done draw their windows again when they come
            self.window_rng.setstate(windows)
            for i in range(done):
                self.batch(first + i)
        self.step_count = first + done
        tokens = [sum(map(len, batch)) - len(batch) for batch in batches]  # predicted
        return [StepResult(first + i + 1, losses[i], lrs[i], tokens[i]) for i in range(done)]

    def fingerprinted(self) -> ckpt_io.RunRecord:
        """The record, with the training documents' fingerprint made if it is pending."""
        if self.make_fingerprint is not None:
            fingerprint = self.make_fingerprint(self.docs)
            self.record = replace(self.record, fingerprint=fingerprint)
            self.make_fingerprint = None
        return self.record

    def checkpoint(self) -> ckpt_io.Checkpoint:
        """Everything needed to sample from, or continue, this run.

        Raises TrainingError when a weight or an Adam moment is NaN or infinite (a diverged
        run whose loss has not shown it yet): such a checkpoint could not be loaded anyway,
        and refusing it keeps the last good one on disk.
        """
        m, v = self.engine.optimizer_state()
        params = self.engine.parameters()
        for kind, tensors in (("weight", params), ("Adam moment", m), ("Adam moment", v)):
            for name, t in tensors.items():
                if not all(map(math.isfinite, t.data)):
                    raise TrainingError(
                        f"the {kind} {name} became NaN or infinite by step {self.step_count}; "
                        f"training diverged. Try a lower --learning-rate (this run: "
                        f"{self.optim.learning_rate:g}) or a smaller model"
                    )
        record = replace(self.fingerprinted(), engine=self.engine.name, dtype=self.engine.dtype,
                         best_val_loss=self.best_val_loss)  # fmt: skip
        return ckpt_io.Checkpoint(
            model=self.model,
            optim=self.optim,
            train=self.train,
            uchars=self.tokenizer.uchars,
            params=params,
            adam_m=m,
            adam_v=v,
            step=self.step_count,
            preset=self.preset,
            rng_state=self.rng.getstate(),
            window_rng_state=self.window_rng.getstate(),
            record=record,
        )

    def evaluate(self) -> Evaluation:
        """Loss and bits per character on the held-out documents (no gradients)."""
        return evaluate(self.engine, self.tokenizer, self.val_docs)


def new_trainer(
    engine_cls: type[Engine],
    docs: Sequence[str],
    model: ModelConfig,
    optim: OptimConfig,
    train: TrainConfig,
    rng: random.Random,
    dtype: str = "float64",
    preset: str = "final",
    record: ckpt_io.RunRecord | None = None,
    val_docs: Sequence[str] | None = None,
    engine_kwargs: dict | None = None,
) -> Trainer:
    """A fresh run over already-shuffled `docs`: tokenizer, then weights drawn from `rng`.

    The vocabulary covers the held-out `val_docs` too, so that they can be scored.
    `engine_kwargs` go to the engine's constructor (e.g. the torch engine's `device`).
    """
    tokenizer = Tokenizer.from_chars(characters(docs, val_docs or []))
    params = init_params(model, tokenizer.vocab_size, rng)
    engine = engine_cls(
        model, optim, tokenizer.vocab_size, params, dtype=dtype, **(engine_kwargs or {})
    )
    return Trainer(
        engine, tokenizer, docs, optim, train, rng, preset=preset, record=record, val_docs=val_docs
    )


def resume_trainer(
    engine_cls: type[Engine],
    ckpt: ckpt_io.Checkpoint,
    docs: Sequence[str],
    val_docs: Sequence[str] | None = None,
    train: TrainConfig | None = None,
    dtype: str = "float64",
    engine_kwargs: dict | None = None,
) -> Trainer:
    """Continue the run saved in `ckpt` over the same (re-read, re-shuffled) documents.

    Weights, Adam's moments, the step, both random generators and the best validation loss
    come from the checkpoint, so the continued run is bit for bit the uninterrupted one.
    `train` may replace the saved TrainConfig (e.g. more steps).
    """
    if ckpt.adam_m is None or ckpt.adam_v is None:
        raise ckpt_io.CheckpointError(
            "the checkpoint holds no optimizer state (a weights-only file); it cannot be resumed"
        )
    tokenizer = ckpt.tokenizer
    unknown = sorted(characters(docs, val_docs or []) - set(tokenizer.uchars))
    if unknown:
        shown = ", ".join(repr(ch) for ch in unknown[:10])
        more = f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else ""
        raise TokenizerError(
            f"the data holds characters outside the checkpoint's vocabulary: {shown}{more}; "
            "resume with the run's own data or start a new run"
        )
    train = train or ckpt.train
    engine = engine_cls(
        ckpt.model, ckpt.optim, tokenizer.vocab_size, ckpt.params, dtype=dtype,
        **(engine_kwargs or {}),
    )
    engine.load_optimizer_state(ckpt.adam_m, ckpt.adam_v)
    window_rng = window_rng_for(train.seed)
    if ckpt.window_rng_state is not None:
        window_rng.setstate(ckpt.window_rng_state)
    return Trainer(
        engine, tokenizer, docs, ckpt.optim, train, ckpt.rng(), step=ckpt.step,
        preset=ckpt.preset, record=ckpt.record, val_docs=val_docs, window_rng=window_rng,
        best_val_loss=ckpt.record.best_val_loss,
    )


# A chunk of steps handed to an engine at once (Trainer.steps) lasts about this long, its
# hooks included, so that a stop request (Ctrl-C) is seen within it; and holds at most
# CHUNK_STEPS steps (past a few hundred, a longer chunk saves nothing: it only holds more
# batches in memory at once).
CHUNK_SECONDS = 0.05
CHUNK_STEPS = 256


def multi_step(engine: Engine) -> bool:
    """Whether the engine trains several steps per call faster than one at a time (it
    overrides Engine.train_steps); the others are handed one step at a time."""
    return type(engine).train_steps is not Engine.train_steps


def steps_to_event(trainer: Trainer, eval_every: int, checkpoint_every: int) -> int:
    """Steps from now up to and including the next one after which something happens: an
    evaluation, a periodic checkpoint, or the last step."""
    done, due = trainer.step_count, [trainer.train.num_steps]
    if trainer.val_docs and eval_every:
        due.append((done // eval_every + 1) * eval_every)
    if checkpoint_every:
        due.append((done // checkpoint_every + 1) * checkpoint_every)
    return min(due) - done


def run(
    trainer: Trainer,
    *,
    eval_every: int = 0,
    checkpoint_every: int = 0,
    on_step: Callable[[StepResult], None] | None = None,
    on_eval: Callable[[int, Evaluation, bool], None] | None = None,
    on_checkpoint: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> bool:
    """Train until done; True when every step ran, False when `should_stop` ended it early.

    Engine-agnostic and free of I/O: everything written goes through the hooks, in this
    order per step: `on_step(result)`; then, every `eval_every` steps and after the last
    one (when there are held-out documents), `on_eval(step, evaluation, is_best)`; then,
    every `checkpoint_every` steps, `on_checkpoint("periodic")`. At the end
    `on_checkpoint("final")`, or `on_checkpoint("stop")` when stopped early.
    `should_stop` is asked before every step, or, with an engine that trains several steps
    per call (multi_step), before every chunk of steps: a chunk never has an evaluation or
    a checkpoint inside it, and lasts about CHUNK_SECONDS (a signal handler sets what
    should_stop reads; the request is seen within that time).
    """

    def after_step(result: StepResult) -> None:
        if on_step is not None:
            on_step(result)
        step = result.step
        last = step == trainer.train.num_steps
        if trainer.val_docs and ((eval_every and step % eval_every == 0) or last):
            evaluation = trainer.evaluate()
            # NOTE: a NaN or infinite loss is never the best: it would be saved as the best in
            # every later checkpoint, and no comparison would ever replace it
            is_best = math.isfinite(evaluation.loss) and (
                trainer.best_val_loss is None or evaluation.loss < trainer.best_val_loss
            )
            if is_best:
                trainer.best_val_loss = evaluation.loss
            if on_eval is not None:
                on_eval(step, evaluation, is_best)
        if checkpoint_every and step % checkpoint_every == 0 and not last:
            if on_checkpoint is not None:
                on_checkpoint("periodic")

    multi = multi_step(trainer.engine)
    chunk = 1  # steps in the next engine call
    while not trainer.done:
        if should_stop is not None and should_stop():
            if on_checkpoint is not None:
                on_checkpoint("stop")
            return False
        k = min(chunk, steps_to_event(trainer, eval_every, checkpoint_every))
        started = time.perf_counter()
        results = trainer.steps(k) if k > 1 else [trainer.step()]
        for result in results:
            after_step(result)
        if len(results) < k:  # a diverged step: computed again, it raises TrainingError
            results.append(trainer.step())
            after_step(results[-1])
        if multi:  # the next chunk: twice this one at most, about CHUNK_SECONDS long
            per_step = (time.perf_counter() - started) / len(results)
            fit = int(CHUNK_SECONDS / max(per_step, 1e-9))
            chunk = max(1, min(2 * len(results), fit, CHUNK_STEPS))
    if on_checkpoint is not None:
        on_checkpoint("final")
    return True
