"""The run a studio session trains: a new one set up by `microgpt train`'s own code, or one
continued from a checkpoint by `train.resume_trainer`, as `microgpt train --resume` does."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

from .. import checkpoint as ckpt_io
from ..config import ConfigError
from ..data import load_docs, split_validation
from ..engine import load_engine
from ..fingerprint import METADATA_KEY, Fingerprint, FingerprintError
from ..train import Trainer, resume_trainer


@dataclass
class Run:
    """A trainer plus what the studio shows beside it."""

    trainer: Trainer
    data_path: str | None
    source: str  # "data" or "checkpoint"
    fingerprint: Fingerprint | None  # of the training documents (novel-only, the report)


def fingerprint_of(trainer: Trainer, where: str) -> Fingerprint | None:
    """The training documents' fingerprint the run records (as `microgpt sample --novel`
    uses it); for an older checkpoint without one, built from the documents when found."""
    if METADATA_KEY in trainer.extra:
        try:
            return Fingerprint.from_json(trainer.extra[METADATA_KEY])
        except FingerprintError as e:
            raise ckpt_io.CheckpointError(f"{where}: {e}") from None
    return Fingerprint.from_docs(trainer.docs) if trainer.docs else None


def new_run(args) -> Run:
    """A fresh run from the training flags, set up by the very code `microgpt train` runs
    (`cli.build_new_trainer`), so with the same flags the losses are the CLI's."""
    from ..cli import build_new_trainer

    trainer = build_new_trainer(args).trainer
    return Run(trainer, trainer.extra["data_path"], "data", fingerprint_of(trainer, "the run"))


def checkpoint_run(args) -> Run:
    """A run continued from a checkpoint, as `microgpt train --resume` continues it. Training
    needs the documents: --data, else the file the checkpoint was trained on (checked against
    its recorded sha256) and the checkpoint's Adam state; without them the model can be
    looked at and sampled, not trained."""
    from ..cli import UsageError, engine_kwargs, fixed_flag_given

    flag = fixed_flag_given(args)
    if flag:
        raise UsageError(
            f"{flag} cannot change when opening a checkpoint (the run's saved configuration "
            "is used); start a new run with --data to change it"
        )
    ckpt = ckpt_io.load(args.checkpoint)
    train = ckpt.train
    if args.steps is not None:
        train = dataclasses.replace(train, num_steps=args.steps)
        train.validate()
        if train.num_steps < ckpt.step:
            raise ConfigError(
                f"--steps {train.num_steps} is fewer than the {ckpt.step} steps this run has done"
            )
    engine_cls = load_engine(args.engine)
    kwargs = engine_kwargs(args, args.engine)
    dtype = args.dtype or ckpt.extra.get("dtype", "float64")
    docs, val_docs, data_path = [], [], args.data or ckpt.extra.get("data_path")
    can_resume = ckpt.adam_m is not None and ckpt.adam_v is not None
    if can_resume and data_path and Path(data_path).is_file():
        # The run's first draw shuffled the documents; replay it on a fresh generator.
        docs, digest = load_docs(data_path, random.Random(train.seed), train.doc_mode)
        recorded = ckpt.extra.get("data_sha256")
        if recorded and digest != recorded and not args.data:
            docs = []  # not the file it was trained on: inspect and sample only
        else:
            docs, val_docs = split_validation(docs, train.val_fraction)
    if docs:
        trainer = resume_trainer(engine_cls, ckpt, docs, val_docs, train=train, dtype=dtype,
                                 engine_kwargs=kwargs)  # fmt: skip
    else:  # inspect and sample only: the weights on the engine, no documents to train on
        tokenizer = ckpt.tokenizer
        engine = engine_cls(ckpt.model, ckpt.optim, tokenizer.vocab_size, ckpt.params,
                            dtype=dtype, **kwargs)  # fmt: skip
        trainer = Trainer(engine, tokenizer, [], ckpt.optim, train, ckpt.rng(), step=ckpt.step,
                          preset=ckpt.preset, extra=dict(ckpt.extra))  # fmt: skip
    fingerprint = fingerprint_of(trainer, str(args.checkpoint))
    return Run(trainer, str(data_path) if docs else None, "checkpoint", fingerprint)
