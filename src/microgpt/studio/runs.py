"""The run a studio session shows: a new one started by the run library (runs.start), or one
continued from a checkpoint by runs.resume, with the same rules as `microgpt train
--resume`; a checkpoint that cannot be resumed (no Adam state, its data file gone) is opened
to look at and sample, not to train."""

from __future__ import annotations

from dataclasses import dataclass

from .. import checkpoint as ckpt_io
from .. import runs
from ..fingerprint import Fingerprint
from ..train import Trainer


@dataclass
class Run:
    """A trainer plus what the studio shows beside it."""

    trainer: Trainer
    data_path: str | None
    source: str  # "data" or "checkpoint"
    fingerprint: Fingerprint | None  # of the training documents (novel-only, the report)


def new_run(spec: runs.RunSpec) -> Run:
    """A fresh run: with the same spec, the losses are `microgpt train`'s."""
    run = runs.start(spec)
    return Run(run.trainer, run.data_path, "data", run.fingerprint())


def checkpoint_run(spec: runs.ResumeSpec) -> Run:
    """The run saved in a checkpoint, continued as `microgpt train --resume` continues it
    (a changed data file is refused the same way), or opened to look at when it cannot be."""
    ckpt = ckpt_io.load(spec.run)
    if runs.can_resume(ckpt, spec.data):
        run = runs.resume(spec, write=False)
        trainer = run.trainer
        # an older checkpoint without a fingerprint: made from the documents found
        fingerprint = run.fingerprint() or Fingerprint.from_docs(trainer.docs)
        return Run(trainer, run.data_path, "checkpoint", fingerprint)
    model = runs.model_from_checkpoint(ckpt, spec.engine)
    trainer = Trainer(model.engine, model.tokenizer, [], ckpt.optim, ckpt.train, ckpt.rng(),
                      step=ckpt.step, preset=ckpt.preset, record=ckpt.record)  # fmt: skip
    return Run(trainer, None, "checkpoint", model.fingerprint)


def open_run(spec: runs.RunSpec | runs.ResumeSpec) -> Run:
    """The run a spec describes: a new one (RunSpec) or a checkpoint's (ResumeSpec)."""
    return new_run(spec) if isinstance(spec, runs.RunSpec) else checkpoint_run(spec)
