"""What each studio request may carry: strict types and ranges, in the page's own words.

A request body is one flat JSON object. Every field has a type and a range; a value of
another type (`"novel": "yes"`, `"count": 2.5`, `"top_k": true`) or out of its range
(`"top_k": -5`, a 1,000-character prompt) is refused with a 400 naming the field as the page
labels it, and so is a field the endpoint does not know (a typo is not silently ignored).
The page reads the same limits from /api/state, so its inputs and the server agree.
Standard library only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class FieldError(ValueError):
    """A request field of the wrong type or out of range; the message is for the page."""


@dataclass(frozen=True)
class Field:
    """One field: its type (bool, int, float, str or one of `choices`), its range, its
    default when absent (None: required unless nullable), and whether null is allowed
    (null means "off", "none" or "keep")."""

    kind: type
    label: str  # how the page names it
    default: object = None
    low: float | None = None  # numbers: the smallest value; str: the shortest length
    high: float | None = None  # numbers: the largest value; str: the longest length
    nullable: bool = False
    choices: tuple[str, ...] = ()

    def limits(self) -> dict:
        return {"low": self.low, "high": self.high, "nullable": self.nullable}

    def parse(self, value):
        if value is None:
            if self.nullable:
                return None
            raise FieldError(f"{self.label} is required")
        if self.choices:
            if value not in self.choices:
                raise FieldError(f"{self.label} must be one of {', '.join(self.choices)}")
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise FieldError(f"{self.label} must be true or false")
            return value
        if self.kind is str:
            if not isinstance(value, str):
                raise FieldError(f"{self.label} must be text")
            low, high = int(self.low or 0), int(self.high or 0)
            if len(value) < low or (self.high is not None and len(value) > high):
                size = f"at most {high}" if not low else f"{low} to {high}"
                raise FieldError(f"{self.label} must be {size} characters long")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FieldError(f"{self.label} must be a number")
        if self.kind is int:
            if not isinstance(value, int):
                if not (math.isfinite(value) and value == int(value)):
                    raise FieldError(f"{self.label} must be a whole number")
                value = int(value)  # 3.0 is 3: JavaScript has one number type
        elif not math.isfinite(value):
            raise FieldError(f"{self.label} must be a finite number")
        else:
            value = float(value)
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            raise FieldError(f"{self.label} must be between {_num(self.low)} and "
                             f"{_num(self.high)}, got {_num(value)}")  # fmt: skip
        return value


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def parse(body: dict, schema: dict[str, Field]) -> dict:
    """The body's fields, checked and with defaults filled in; FieldError on the first bad one."""
    unknown = sorted(set(body) - set(schema))
    if unknown:
        raise FieldError(f"unknown field {unknown[0]!r}; this request takes "
                         f"{', '.join(schema) or 'no fields'}")  # fmt: skip
    return {key: f.parse(body.get(key, f.default)) for key, f in schema.items()}


# --- the endpoints' fields ------------------------------------------------------------------
# Limits a learner needs, and that keep one request from holding the machine for minutes.
WORD_CHARS = 64
PROMPT_CHARS = 32
MAX_COUNT = 200

TRAIN = {"action": Field(str, "action", choices=("start", "stop", "step", "reset"))}
PACE = {"steps_per_s": Field(float, "speed (steps per second)", low=1, high=1000,
                             nullable=True)}  # fmt: skip
CONTINUE = {"steps": Field(int, "more steps", low=1, high=100_000)}
SETTINGS = {  # the run's settings, applied by starting a new run (runs.start)
    "steps": Field(int, "steps", low=1, high=100_000, nullable=True),
    "learning_rate": Field(float, "learning rate", low=1e-5, high=1.0, nullable=True),
    "n_embd": Field(int, "width (n_embd)", low=1, high=256, nullable=True),
    "n_layer": Field(int, "layers (n_layer)", low=1, high=8, nullable=True),
    "n_head": Field(int, "heads (n_head)", low=1, high=64, nullable=True),
    "block_size": Field(int, "context (block size)", low=1, high=128, nullable=True),
    "seed": Field(int, "seed", low=0, high=2**32 - 1, nullable=True),
}
INSPECT = {
    "text": Field(str, "word", default="emma", high=WORD_CHARS),
    "temperature": Field(float, "temperature", default=1.0, low=0.05, high=10),
}
GRAPH = {
    "text": Field(str, "word", default="emma", high=WORD_CHARS),
    "position": Field(int, "position", default=0, low=0, high=1024),
    "focus": Field(int, "node", low=0, high=10**9, nullable=True),
}
SAMPLE = {
    "prompt": Field(str, "prompt", default="", high=PROMPT_CHARS),
    "count": Field(int, "count", default=10, low=1, high=MAX_COUNT),
    "temperature": Field(float, "temperature", default=0.5, low=0, high=10),
    "top_k": Field(int, "top-k", default=None, low=1, high=10_000, nullable=True),
    "novel": Field(bool, "novel only", default=False),
    "min_length": Field(int, "min length", low=0, high=1000, nullable=True),
    "max_length": Field(int, "max length", low=0, high=1000, nullable=True),
    "seed": Field(int, "seed", low=0, high=2**63 - 1, nullable=True),
}
EMPTY: dict[str, Field] = {}


def limits() -> dict:
    """Every field's range, for the page's inputs."""
    groups = {"settings": SETTINGS, "inspect": INSPECT, "sample": SAMPLE, "pace": PACE,
              "continue": CONTINUE}  # fmt: skip
    return {g: {k: f.limits() for k, f in schema.items()} for g, schema in groups.items()}
