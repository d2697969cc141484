"""The one door for runs: start a run, resume one, train it, and load a model to score or
sample. Standard library only; an engine is imported once a spec names it.

Every front end (the CLI, the studio, export, the Python API, bench, sweep) describes what it
wants with the typed specs below and calls these functions, so the same spec gives the same
run everywhere, and there is one set of rules for what a run may change when it resumes:

    spec = RunSpec(data="names.txt", steps=200, learning_rate=0.01)
    run = start(spec, out="runs/names")       # configs, data, weights; DIR/config.json
    train(run)                                # steps, metrics.jsonl, checkpoints
    run = resume(ResumeSpec("runs/names", steps=400))   # the same run, 200 steps more
    model = load_model("runs/names/model.safetensors")  # sample, report, evaluate

A run is: a `Trainer` (train.py: the engine, the documents, the random generators, the step),
its run directory (rundir.py), and the record its checkpoints carry (checkpoint.RunRecord).
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import checkpoint as ckpt_io
from . import resources, rundir
from .config import (
    MAX_STEPS,
    ConfigError,
    ModelConfig,
    OptimConfig,
    Preset,
    TrainConfig,
    get_preset,
    to_dict,
)
from .data import (
    DATA_HINT,
    DataError,
    Documents,
    characters,
    check_data_file,
    default_names_path,
    load_docs,
    read_documents,
    read_text,
    split_validation,
)
from .draw import Draw, SampleConfig
from .engine import Engine, EngineError, default_engine, load_engine
from .evaluate import Evaluation, evaluate
from .fingerprint import Fingerprint, FingerprintError
from .init import num_params
from .report import Report, make_report
from .sample import Sample
from .schema import Int, SchemaError
from .tokenizer import TokenizerError
from .train import StepResult, Trainer, TrainingError, new_trainer, resume_trainer
from .train import run as run_loop
from .version import __version__

# Mistakes a user can make, each with a one-line message saying what to do. Front ends
# print them as `microgpt: error: <message>` and exit 2; anything else is a bug.
USER_ERRORS = (
    ConfigError, DataError, EngineError, ckpt_io.CheckpointError, TokenizerError,
    rundir.RunDirError, TrainingError,
)  # fmt: skip


# --- specs: what the caller asks for --------------------------------------------------------


@dataclass(frozen=True)
class EngineSpec:
    """Which engine computes, in which precision, and where (torch only)."""

    name: str | None = None  # None: engine.default_engine() (resume: the run's engine)
    dtype: str | None = None  # None: float64 (resume: the run's)
    device: str | None = None  # torch only: auto, cpu, cuda, mps
    compile: bool = False  # torch only: torch.compile the training step

    def build(self, saved: str | None = None, saved_dtype: str | None = None):
        """(engine class, name, dtype, constructor keywords), the saved run's choice filling
        what the spec leaves open."""
        name = self.name or saved or default_engine()
        kwargs: dict = {"device": self.device} if self.device else {}
        if self.compile:
            kwargs["compile"] = True
        if kwargs and name != "torch":
            flags = " and ".join(f"--{k}" for k in kwargs)
            raise ConfigError(f"{flags} needs --engine torch (the {name} engine runs on the CPU)")
        engine_cls = load_engine(name)
        return engine_cls, name, self.dtype or saved_dtype or "float64", kwargs


@dataclass(frozen=True)
class RunSpec:
    """A new run: a preset with fields laid over it. None keeps the preset's value.

    The field names are `microgpt train`'s flags (--n-embd is n_embd, --steps is steps), so
    a sweep can vary any of them with dataclasses.replace.
    """

    preset: str = "final"
    data: str | None = None  # a UTF-8 text file; None: the names dataset (downloaded once)
    engine: EngineSpec = field(default_factory=EngineSpec)
    # the model
    n_embd: int | None = None
    n_head: int | None = None
    n_layer: int | None = None
    block_size: int | None = None
    # the optimizer and the run
    learning_rate: float | None = None
    steps: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    temperature: float | None = None  # of the samples printed after training
    num_samples: int | None = None
    doc_mode: str | None = None  # lines, paragraphs, text
    val_fraction: float | None = None
    # the loop: evaluate the held-out documents / write a checkpoint every N steps (0: off)
    eval_every: int = 0
    checkpoint_every: int = 0

    def configs(self) -> tuple[Preset, ModelConfig, OptimConfig, TrainConfig]:
        """The preset's configs with this spec laid over them, each validated."""
        preset = get_preset(self.preset)
        model = _replace(preset.model, n_embd=self.n_embd, n_head=self.n_head,
                         n_layer=self.n_layer, block_size=self.block_size)  # fmt: skip
        optim = _replace(preset.optim, learning_rate=self.learning_rate)
        train = _replace(
            preset.train, num_steps=self.steps, batch_size=self.batch_size, seed=self.seed,
            temperature=self.temperature, num_samples=self.num_samples, doc_mode=self.doc_mode,
            val_fraction=self.val_fraction,
        )  # fmt: skip
        for config in (model, optim, train):
            config.validate()
        check_loop(self.eval_every, self.checkpoint_every)
        if self.data == "":
            raise ConfigError("--data needs a file, got ''")
        if self.eval_every and not train.val_fraction:
            raise ConfigError(
                "--eval-every needs held-out documents; add --val-fraction F (e.g. 0.1)"
            )
        return preset, model, optim, train


@dataclass(frozen=True)
class ResumeSpec:
    """Continue a run from its latest checkpoint. What may change: the number of steps (the
    schedule then follows the new length), the samples printed after training, the loop
    options, the engine and its precision, and (explicitly) the data file."""

    run: str  # the run directory (or one of its checkpoint files)
    steps: int | None = None  # None: the run's
    temperature: float | None = None
    num_samples: int | None = None
    data: str | None = None  # None: the file the run recorded
    allow_data_change: bool = False  # train on a file whose sha256 differs from the run's
    engine: EngineSpec = field(default_factory=EngineSpec)
    eval_every: int | None = None  # None: the run's
    checkpoint_every: int | None = None


def _replace(config, **values):
    """dataclasses.replace with the None values left out."""
    return dataclasses.replace(config, **{k: v for k, v in values.items() if v is not None})


def check_loop(eval_every: int, checkpoint_every: int) -> None:
    """The loop's options: every N steps (0: off), stored in checkpoints as the steps are."""
    for name, value in (("eval-every", eval_every), ("checkpoint-every", checkpoint_every)):
        rule = f"an integer >= 0 (0 turns it off; at most {MAX_STEPS})"
        try:
            Int(0, MAX_STEPS, f"--{name}", rule=rule)(value)
        except SchemaError as e:
            raise ConfigError(str(e)) from None


# --- a run ------------------------------------------------------------------------------------


@dataclass
class Run:
    """A trainer, the preset it follows, and where its files go (None: nowhere)."""

    trainer: Trainer
    preset: Preset
    engine: str  # the engine's name
    dir: rundir.RunDir | None = None
    resumed_from: Path | None = None  # the checkpoint a resumed run continues

    def close(self) -> None:
        """Let go of the run's directory (its lock). `train` does this when it ends; a run
        that never reached its first checkpoint leaves the folder as it found it."""
        if self.dir is not None:
            self.dir.close()

    @property
    def eval_every(self) -> int:
        return self.trainer.record.eval_every

    @property
    def checkpoint_every(self) -> int:
        return self.trainer.record.checkpoint_every

    @property
    def data_path(self) -> str | None:
        return self.trainer.record.data_path

    def fingerprint(self) -> Fingerprint | None:
        """The training documents' fingerprint (for novel-only samples and the report)."""
        record = self.trainer.fingerprinted()
        if record.fingerprint is None:
            return None
        try:
            return Fingerprint.from_json(record.fingerprint)
        except FingerprintError as e:
            raise ckpt_io.CheckpointError(f"the run's documents fingerprint: {e}") from None

    def config_record(self) -> dict:
        """What DIR/config.json records: enough for a person to see (and redo) the run."""
        t = self.trainer
        return {
            "microgpt_version": __version__,
            "preset": t.preset,
            "engine": self.engine,
            "data_path": t.record.data_path,
            "data_sha256": t.record.data_sha256,
            "num_train_docs": len(t.docs),
            "num_val_docs": len(t.val_docs),
            "vocab": "".join(t.tokenizer.uchars),
            "model": to_dict(t.model),
            "optim": to_dict(t.optim),
            "train": to_dict(t.train),
            "eval_every": self.eval_every,
            "checkpoint_every": self.checkpoint_every,
        }


def fingerprint_json(docs: Sequence[str]) -> str:
    return Fingerprint.from_docs(docs).to_json()


class DocsCache:
    """What a process that starts many runs on one file (a sweep's worker) need not redo:
    the file's documents as each seed shuffles them, and the training documents' fingerprint
    (a Bloom filter: the costliest part of `start` on the names, more than the shuffle).

    Documents are keyed by the file's sha256 (read afresh every time, so a changed file is
    never served stale), the doc mode and the generator's state before the shuffle; the
    generator is left in the state the shuffle would leave it in. So a run started with a
    cache is bit for bit one started without. The `size` most recent entries are kept.
    """

    def __init__(self, size: int = 4):
        self.size = size
        self._docs: dict = {}  # (sha256, mode, rng state) -> (docs, rng state after)
        self._fingerprints: dict = {}  # training documents -> fingerprint JSON

    def load_docs(self, path: Path, rng: random.Random, mode: str, hint: str = DATA_HINT,
                  budget: int | None = None) -> tuple[Documents, str]:  # fmt: skip
        """data.load_docs, remembered (documents are never changed once read)."""
        key = (read_text(path)[1], mode, rng.getstate())
        if key not in self._docs:
            docs, digest = load_docs(path, rng, mode, hint, budget)
            key = (digest,) + key[1:]  # the file's bytes as load_docs read them
            self._keep(self._docs, key, (docs, rng.getstate()))
        docs, state = self._docs[key]
        rng.setstate(state)
        return docs, key[0]

    def fingerprint(self, docs: Sequence[str]) -> str:
        """Fingerprint.from_docs(docs).to_json(), remembered."""
        if isinstance(docs, Documents):
            # NOTE: which documents, without decoding them (that took a third of a trial):
            # their store and their order in it. The entry keeps `docs` (so its store)
            # alive, so the store's id cannot be reused by another while the entry is here.
            key = (id(docs.chars), tuple(docs.order))
        else:
            key = tuple(docs)
        if key not in self._fingerprints:
            self._keep(self._fingerprints, key, (docs, fingerprint_json(docs)))
        return self._fingerprints[key][1]

    def _keep(self, entries: dict, key, value) -> None:
        while entries and len(entries) >= self.size:
            del entries[next(iter(entries))]  # the oldest
        entries[key] = value


class Memory:
    """A run's memory, checked before anything big is allocated: the engine's estimate for
    the model and batch (from the configs alone, so an impossible --n-embd or --batch-size
    is refused at once), then the documents, read within what the model leaves free and
    checked again with the vocabulary they bring."""

    def __init__(self, engine_cls: type[Engine], model: ModelConfig, batch_size: int, dtype: str,
                 vocab_size: int | None = None, fixed: bool = False):  # fmt: skip
        self.engine_cls, self.model, self.batch_size, self.dtype = (
            engine_cls, model, batch_size, dtype)  # fmt: skip
        self.vocab_size = vocab_size  # None: not known before the documents are read
        self.fixed = fixed  # a saved run's (resume): its sizes cannot be lowered

    def parts(self, vocab_size: int, documents: int = 0) -> dict[str, int]:
        estimate = self.engine_cls.memory_estimate
        weights = estimate(self.model, vocab_size, 0, self.dtype)  # no batch: the weights
        return {
            "weights and Adam": weights,
            "activations": estimate(self.model, vocab_size, self.batch_size, self.dtype) - weights,
            "documents": documents,
        }

    def check(self, vocab_size: int, documents: int = 0) -> None:
        need = self.parts(vocab_size, documents)
        resources.check(need, self.advice(need, vocab_size))

    def advice(self, need: dict[str, int], vocab_size: int) -> str:
        """What to lower: the flags that shrink the part that needs the most."""
        biggest = max(need, key=need.get)
        if biggest == "documents":
            return "train on a smaller data file"
        if self.fixed:
            return "free some memory (a saved run's sizes cannot change on resume)"
        if biggest == "activations":  # they grow with every size: the batch's first
            return "lower --batch-size, --block-size, --n-embd or --n-layer"
        vocab = f" (or the vocabulary: {vocab_size - 1:,} characters)" if vocab_size > 1000 else ""
        return f"lower --n-embd, --n-layer or --block-size{vocab}"

    def read_docs(self, path: Path, rng: random.Random, doc_mode: str,
                  hint: str = DATA_HINT, load=load_docs) -> tuple[Documents, str]:  # fmt: skip
        """The shuffled documents and the file's sha256, if they and the model fit; `load`
        is data.load_docs or a cache's (DocsCache.load_docs)."""
        size = check_data_file(path, hint).st_size
        vocab = self.vocab_size or 2  # the fewest: one character and BOS
        self.check(vocab, size // 4)  # a character is at most 4 bytes of UTF-8
        model = sum(self.parts(vocab).values())
        docs, digest = load(path, rng, doc_mode, hint, resources.budget(model))
        self.check(self.vocab_size or len(characters(docs)) + 1, docs.nbytes)
        return docs, digest


def start(
    spec: RunSpec,
    out: str | os.PathLike | None = None,
    force: bool = False,
    show: Callable[[str], None] | None = None,
    write: bool = True,
    cache: DocsCache | None = None,
) -> Run:
    """A new run: validate the spec, read and shuffle the documents, draw the weights.

    One generator seeded with the seed shuffles the documents and then draws the weights
    (the original's order); the held-out documents are the shuffled list's tail. With `out`,
    the run's directory is checked before anything is read and created once the run is
    built (`force` replaces a run already there); `write=False` sets the same run up without
    touching `out` (the processes of a torchrun job but rank 0). `show` gets the lines the
    original prints first (num docs, vocab size, num params). `cache` remembers documents and
    fingerprints between the runs a process starts (the same run, faster).
    """
    preset, model, optim, train = spec.configs()
    if spec.checkpoint_every and out is None:
        raise ConfigError("--checkpoint-every needs --out DIR to write the checkpoints to")
    if out is not None and write:
        rundir.check_new(out, force)  # before anything is read or written
    engine_cls, engine_name, dtype, kwargs = spec.engine.build()
    rng = random.Random(train.seed)  # Let there be order among chaos
    data_path = Path(spec.data) if spec.data is not None else default_names_path()
    memory = Memory(engine_cls, model, train.batch_size, dtype)
    load = cache.load_docs if cache is not None else load_docs
    docs, data_sha256 = memory.read_docs(data_path, rng, train.doc_mode, load=load)
    train_docs, val_docs = split_validation(docs, train.val_fraction)
    if show is not None:
        show(f"num docs: {len(docs)}")
    record = ckpt_io.RunRecord(
        data_path=str(data_path.resolve()), data_sha256=data_sha256,
        eval_every=spec.eval_every, checkpoint_every=spec.checkpoint_every,
    )  # fmt: skip
    trainer = new_trainer(
        engine_cls, train_docs, model, optim, train, rng, dtype=dtype, preset=preset.name,
        record=record, val_docs=val_docs, engine_kwargs=kwargs,
    )  # fmt: skip
    # NOTE: the fingerprint (a Bloom filter over every training document, 0.25 s for the
    # 32,033 names) is made when first needed (the first checkpoint, or Run.fingerprint): a
    # run that saves nothing never waits for it
    trainer.make_fingerprint = cache.fingerprint if cache is not None else fingerprint_json
    if show is not None:
        show(f"vocab size: {trainer.tokenizer.vocab_size}")
        show(f"num params: {num_params(model, trainer.tokenizer.vocab_size)}")
    run = Run(trainer, preset, engine_name)
    if out is not None and write:
        run.dir = rundir.RunDir.create(out, force, run.config_record())
    return run


def resume(spec: ResumeSpec, write: bool = True) -> Run:
    """Continue the run saved in `spec.run` exactly where it stopped.

    The saved configs, weights, Adam moments, step, random generators and best validation
    loss are used, so the continued run is bit for bit the uninterrupted one. The documents
    are re-read from the run's data file (or `spec.data`) and must be the same file (its
    sha256) unless `spec.allow_data_change`. With `write`, the run's directory continues:
    metrics past the checkpoint are dropped, and new ones and checkpoints are written there.
    """
    ckpt_path = rundir.check_resumable(spec.run, in_place=write)
    lock = None
    if write:  # one writer: held from before the checkpoint is read until the run ends
        flag = f"--resume {str(spec.run)!r}"
        lock = rundir.Lock.acquire(ckpt_path.parent, flag)
    try:
        run = _resume(spec, ckpt_path, lock, write)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return run


def _resume(spec: ResumeSpec, ckpt_path: Path, lock, write: bool) -> Run:
    ckpt = ckpt_io.load(ckpt_path)
    if write:
        rundir.check_in_place(ckpt_path.parent, f"--resume {str(spec.run)!r}", ckpt)
    if ckpt.adam_m is None or ckpt.adam_v is None:
        raise ckpt_io.CheckpointError(
            f"{ckpt_path} holds no optimizer state (a weights-only file); it cannot be resumed"
        )
    train = _replace(ckpt.train, num_steps=spec.steps, temperature=spec.temperature,
                     num_samples=spec.num_samples)  # fmt: skip
    train.validate()
    if train.num_steps < ckpt.step:
        raise ConfigError(
            f"--steps {train.num_steps} is fewer than the {ckpt.step} steps this run has done"
        )
    saved = ckpt.record
    eval_every = saved.eval_every if spec.eval_every is None else spec.eval_every
    checkpoint_every = (
        saved.checkpoint_every if spec.checkpoint_every is None else spec.checkpoint_every
    )
    check_loop(eval_every, checkpoint_every)
    kept = rundir.kept_metrics(ckpt_path.parent, ckpt.step) if write else b""
    engine_cls, engine_name, dtype, kwargs = spec.engine.build(saved.engine, saved.dtype)
    data_path = run_data_path(ckpt, spec.data)
    hint = DATA_HINT
    if spec.data is None and saved.data_path is not None:
        hint = "the run recorded this path; if the file moved, give its new path with --data"
    memory = Memory(engine_cls, ckpt.model, train.batch_size, dtype,
                    vocab_size=ckpt.tokenizer.vocab_size, fixed=True)  # fmt: skip
    rng = random.Random(train.seed)  # the same shuffle, hence the same documents in order
    docs, data_sha256 = memory.read_docs(data_path, rng, train.doc_mode, hint)
    if saved.data_sha256 and saved.data_sha256 != data_sha256 and not spec.allow_data_change:
        raise DataError(
            f"data file {str(data_path)!r} is not the one this run trained on (sha256 "
            f"{data_sha256[:12]}... differs from the recorded {saved.data_sha256[:12]}...); "
            "pass the run's data with --data, or --allow-data-change to continue on this one"
        )
    train_docs, val_docs = split_validation(docs, train.val_fraction)
    trainer = resume_trainer(engine_cls, ckpt, train_docs, val_docs, train=train, dtype=dtype,
                             engine_kwargs=kwargs)  # fmt: skip
    trainer.record = dataclasses.replace(
        saved, data_path=str(data_path.resolve()), data_sha256=data_sha256,
        eval_every=eval_every, checkpoint_every=checkpoint_every,
    )  # fmt: skip
    run = Run(trainer, get_preset(ckpt.preset), engine_name, resumed_from=ckpt_path)
    if write:
        run.dir = rundir.RunDir.reopen(ckpt_path.parent, ckpt.step, run.config_record(), lock,
                                       kept)  # fmt: skip
    return run


def run_data_path(ckpt: ckpt_io.Checkpoint, data: str | os.PathLike | None = None) -> Path:
    """The data file a run continues on: `data`, else the one it recorded, else the names."""
    if data is not None:
        return Path(data)
    if ckpt.record.data_path is not None:
        return Path(ckpt.record.data_path)
    return default_names_path()


def can_resume(ckpt: ckpt_io.Checkpoint, data: str | os.PathLike | None = None) -> bool:
    """Whether `resume` has what it needs: Adam's moments and a data file to read."""
    if ckpt.adam_m is None or ckpt.adam_v is None:
        return False
    if data is None and ckpt.record.data_path is None:
        return True  # the names dataset
    return Path(run_data_path(ckpt, data)).is_file()


# --- training ---------------------------------------------------------------------------------


def train(
    run: Run,
    *,
    on_step: Callable[[StepResult], None] | None = None,
    on_eval: Callable[[int, Evaluation, bool], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> bool:
    """Train `run` to its last step (True) or until `should_stop` says so (False).

    Writes through the run's directory, if it has one: a metrics line per step and per
    evaluation, the best checkpoint at each new best validation loss, the latest every
    checkpoint_every steps, at the end and when stopped. The hooks see the same results
    (for printing). A diverged run raises TrainingError naming the last good checkpoint.
    """
    trainer, out = run.trainer, run.dir

    def step_hook(result: StepResult) -> None:
        if out is not None:
            out.log({"step": result.step, "loss": result.loss, "lr": result.lr})
        if on_step is not None:
            on_step(result)

    def eval_hook(step: int, evaluation: Evaluation, is_best: bool) -> None:
        if out is not None:
            out.log({"step": step, "val_loss": evaluation.loss,
                     "val_bpc": evaluation.bits_per_char})  # fmt: skip
            if is_best:
                out.save(trainer.checkpoint(), best=True)
        if on_eval is not None:
            on_eval(step, evaluation, is_best)

    def checkpoint_hook(reason: str) -> None:
        if out is not None:
            out.save(trainer.checkpoint())

    try:
        return run_loop(
            trainer, eval_every=run.eval_every, checkpoint_every=run.checkpoint_every,
            on_step=step_hook, on_eval=eval_hook, on_checkpoint=checkpoint_hook,
            should_stop=should_stop,
        )  # fmt: skip
    except TrainingError as e:
        raise TrainingError(f"{e}; {kept_after_failure(run)}") from None
    finally:
        if out is not None:
            out.close()


def kept_after_failure(run: Run) -> str:
    """What a run that failed leaves, for the end of its error message."""
    out = run.dir
    if out is None:
        return "nothing was saved (no --out DIR)"
    if out.saved_step is not None:
        return f"the last good checkpoint, {out.latest} (step {out.saved_step}), is kept"
    if out.best_step is not None:
        return f"the best checkpoint, {out.best} (step {out.best_step}), is kept"
    if out.replacing:
        return f"no checkpoint was written yet, so {out.path} keeps the run that was there"
    if run.checkpoint_every:
        return (f"no checkpoint was written yet (the first was due at step "
                f"{run.checkpoint_every}); nothing was left in {out.path}")  # fmt: skip
    return "no checkpoint was written yet (add --checkpoint-every N to keep one)"


class StopSignals:
    """Turns the first SIGINT/SIGTERM into a request to stop after the current step (so a
    checkpoint can be written); a second SIGINT/SIGTERM quits at once (KeyboardInterrupt).

        with StopSignals() as stop:
            train(run, should_stop=stop.requested)
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopSignals:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# --- scoring and sampling a saved model -------------------------------------------------------


def scoring_docs(ckpt: ckpt_io.Checkpoint, data: str | os.PathLike,
                 doc_mode: str | None = None) -> Documents:  # fmt: skip
    """The documents a checkpoint is scored on in a file: split as the model was trained
    (the doc mode its train config stores), or by `doc_mode`; in file order. They are read
    within the memory left free."""
    mode = doc_mode or ckpt.train.doc_mode
    return read_documents(data, mode, budget=resources.budget(0))[0]


class Model:
    """A checkpoint's model on an engine, with the random stream sampling continues.

    Without a seed, sampling continues the run's saved random state, so the first samples
    equal the ones `microgpt train` printed after training.
    """

    def __init__(self, ckpt: ckpt_io.Checkpoint, engine: Engine):
        self.checkpoint = ckpt
        self.engine = engine
        self.tokenizer = ckpt.tokenizer
        self.fingerprint = ckpt.docs_fingerprint()
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
            top_k=top_k, prompt=prompt, max_new_tokens=max_new_tokens, novel=novel,
            min_length=min_length, max_length=max_length, max_tries=max_tries,
        )  # fmt: skip
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
        data: str | os.PathLike | Sequence[str],
        doc_mode: str | None = None,
        batch_size: int = 32,
    ) -> Evaluation:
        """Loss and bits per character over a file's documents (or a list of documents).

        A file is split as the model was trained (its stored doc mode) unless `doc_mode`
        says otherwise; `microgpt eval` scores through this same method.
        """
        if type(batch_size) is not int or batch_size < 1:
            raise ConfigError(f"--batch-size must be a positive integer, got {batch_size!r}")
        is_file = isinstance(data, (str, os.PathLike))
        docs = scoring_docs(self.checkpoint, data, doc_mode) if is_file else data
        missing = sorted(characters(docs) - set(self.tokenizer.uchars))
        if missing:
            where = str(data) if is_file else "the documents"
            shown = ", ".join(repr(ch) for ch in missing[:10])
            raise TokenizerError(f"{where} has characters not in the model's vocabulary: "
                                 f"{shown}; evaluate on text like the training data")  # fmt: skip
        estimate = type(self.engine).memory_estimate
        config, vocab, dtype = self.engine.config, self.tokenizer.vocab_size, self.engine.dtype
        chars = len(docs.chars) if isinstance(docs, Documents) else sum(map(len, docs))
        batch = min(batch_size, len(docs) + chars // config.block_size + 1)  # >= the windows
        extra = estimate(config, vocab, batch, dtype) - estimate(config, vocab, 1, dtype)
        resources.check({"activations": extra}, "lower --batch-size")
        return evaluate(self.engine, self.tokenizer, docs, batch_size=batch_size)


def model_from_checkpoint(
    ckpt: ckpt_io.Checkpoint, engine: EngineSpec | None = None, params=None
) -> Model:
    """`ckpt`'s model on an engine; `params` replaces its weights (e.g. dequantized ones)."""
    engine_cls, _, dtype, kwargs = (engine or EngineSpec()).build()
    need = engine_cls.memory_estimate(ckpt.model, ckpt.tokenizer.vocab_size, 1, dtype)
    resources.check({"the model": need}, "free some memory, or use --dtype float32")
    weights = ckpt.params if params is None else params
    eng = engine_cls(ckpt.model, ckpt.optim, ckpt.tokenizer.vocab_size, weights, dtype=dtype,
                     **kwargs)  # fmt: skip
    return Model(ckpt, eng)


def load_model(path: str | os.PathLike, engine: EngineSpec | None = None) -> Model:
    """Load a checkpoint onto an engine (the default engine unless `engine` names one)."""
    return model_from_checkpoint(ckpt_io.load(path), engine)
