"""Declared shapes for values that come from outside: a type and a range for every field,
checked before the value is used. Standard library only.

The configs (config.py) declare their fields with these checks, and so do the checkpoint's
metadata (checkpoint.METADATA) and the documents' fingerprint: one schema, used for the
command line's flags and for every file microgpt reads. A value of the wrong type, out of
range, NaN, a huge integer, a list where a number goes, a string with a lone surrogate, or
JSON nested a hundred thousand deep, is refused with one line (SchemaError) naming the field.

>>> Int(1, 100, "n_embd")(16)
16
>>> Int(1, 100, "n_embd")(True)
Traceback (most recent call last):
...
microgpt.schema.SchemaError: n_embd must be a positive integer (at most 100), got True
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable


class SchemaError(ValueError):
    """A value that does not have its declared type or range; one line naming the field."""


def shown(value) -> str:
    """A value for an error message: short, one line, printable whatever it holds."""
    if type(value) is int and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, (list, dict)):
        return f"a JSON {'list' if isinstance(value, list) else 'object'}"
    text = repr(value)  # escapes surrogates and control characters
    return text if len(text) <= 40 else text[:37] + "..."


class Check:
    """A field's declared type and range: call it with a value, get the value (or a plain
    Python equivalent) back, or SchemaError."""

    label = "value"
    rule = "valid"

    def __call__(self, value):
        raise NotImplementedError

    def fail(self, value, rule: str | None = None):
        raise SchemaError(f"{self.label} must be {rule or self.rule}, got {shown(value)}")

    def named(self, label: str) -> Check:
        """The same check, naming the value differently (e.g. as a flag: --temperature)."""
        other = copy.copy(self)
        other.label = label
        return other


class Int(Check):
    """An int (never a bool) in [lo, hi]."""

    def __init__(self, lo: int, hi: int, label: str = "value", rule: str = ""):
        self.lo, self.hi, self.label = lo, hi, label
        self.rule = rule or {1: "a positive integer", 0: "an integer >= 0"}.get(
            lo, f"an integer >= {lo}"
        ) + f" (at most {hi})"

    def __call__(self, value):
        if type(value) is not int or not self.lo <= value <= self.hi:
            self.fail(value)
        return value


class Number(Check):
    """A finite float (an int is accepted and converted) with lo <= x < hi (`closed`:
    x <= hi), and x > lo when `above`."""

    def __init__(self, lo: float, hi: float, label: str = "value", rule: str = "",
                 above: bool = False, closed: bool = False, also: tuple = ()):  # fmt: skip
        self.lo, self.hi, self.above, self.closed, self.label = lo, hi, above, closed, label
        self.also = also  # values accepted outside the range (0 for temperature: greedy)
        self.rule = rule or f"a finite number {'>' if above else '>='} {lo:g}"

    def __call__(self, value):
        if type(value) not in (int, float) or (type(value) is float and not math.isfinite(value)):
            self.fail(value)
        if value in self.also:
            return float(value)
        # NOTE: an int is compared before it is converted: float(10**4000) raises
        ok = (value > self.lo if self.above else value >= self.lo) and (
            value <= self.hi if self.closed else value < self.hi
        )
        if not ok:
            self.fail(value)
        return float(value)


def is_text(value) -> bool:
    """A str that is text: no lone surrogates (they cannot be written or printed)."""
    if type(value) is not str:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Text(Check):
    """A str of at most `max_len` characters, one of `choices` or matching `pattern`."""

    def __init__(self, label: str = "value", max_len: int = 4096, choices: tuple = (),
                 pattern: str | None = None, rule: str = ""):  # fmt: skip
        self.label, self.max_len, self.choices = label, max_len, choices
        self.pattern = re.compile(pattern) if pattern else None
        self.rule = rule or (f"one of {', '.join(map(str, choices))}" if choices else "text")

    def __call__(self, value):
        if not is_text(value) or len(value) > self.max_len:
            self.fail(value)
        if self.choices and value not in self.choices:
            self.fail(value)
        if self.pattern is not None and not self.pattern.fullmatch(value):
            self.fail(value)
        return value


class Items(Check):
    """A list of `min_len` to `max_len` items, each checked by `item`; as a tuple."""

    def __init__(self, item: Check, min_len: int, max_len: int, label: str = "value",
                 rule: str = ""):  # fmt: skip
        self.item, self.min_len, self.max_len, self.label = item, min_len, max_len, label
        self.rule = rule or f"a list of {min_len} to {max_len} items"

    def __call__(self, value):
        if type(value) not in (list, tuple) or not self.min_len <= len(value) <= self.max_len:
            self.fail(value)
        return tuple(self.item(x) for x in value)


class Record(Check):
    """A JSON object with exactly these fields (those in `optional` may be left out)."""

    def __init__(self, fields: dict[str, Check], label: str = "value",
                 optional: tuple = ()):  # fmt: skip
        self.fields, self.label, self.optional = fields, label, optional
        self.rule = f"an object with the fields {', '.join(fields)}"

    def __call__(self, value):
        if type(value) is not dict:
            self.fail(value)
        unknown = [k for k in value if k not in self.fields]
        if unknown:
            raise SchemaError(f"{self.label} has an unknown field {shown(unknown[0])}")
        missing = [k for k in self.fields if k not in value and k not in self.optional]
        if missing:
            raise SchemaError(f"{self.label} has no field {missing[0]!r}")
        return {k: check(value[k]) for k, check in self.fields.items() if k in value}


class Mapping(Check):
    """A JSON object of at most `max_len` entries, keys and values each checked."""

    def __init__(self, key: Check, value: Check, max_len: int, label: str = "value"):
        self.key, self.value, self.max_len, self.label = key, value, max_len, label
        self.rule = f"an object of at most {max_len} entries"

    def __call__(self, value):
        if type(value) is not dict or len(value) > self.max_len:
            self.fail(value)
        return {self.key(k): self.value(v) for k, v in value.items()}


class Nullable(Check):
    def __init__(self, check: Check):
        self.check, self.label, self.rule = check, check.label, f"null or {check.rule}"

    def __call__(self, value):
        return None if value is None else self.check(value)


class Parsed(Check):
    """A str that holds another value: parsed by `parse` (e.g. JSON, a decimal integer)
    before its own check. A parser's ValueError (or deep nesting) is a SchemaError."""

    def __init__(self, parse: Callable[[str], object], check: Check, max_len: int = 1 << 26,
                 invalid: str = ""):  # fmt: skip
        self.parse, self.check, self.max_len = parse, check, max_len
        self.label, self.rule = check.label, check.rule
        self.invalid = invalid  # what to say when it does not parse (default: the rule)

    def __call__(self, value):
        if type(value) is not str or len(value) > self.max_len:
            self.fail(value, f"a string holding {self.rule}")
        try:
            parsed = self.parse(value)
        except (ValueError, RecursionError, OverflowError):
            if self.invalid:
                raise SchemaError(f"{self.label} {self.invalid}") from None
            self.fail(value)
        return self.check(parsed)


def strict_json(text: str):
    """json.loads that refuses duplicate keys and the non-standard NaN/Infinity constants
    (a number too large for a float, 1e999, becomes inf: the checks refuse it)."""

    def no_duplicates(pairs):
        out = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(f"duplicate key {key!r}")
            out[key] = value
        return out

    def no_constant(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constant)


def decimal(text: str) -> int:
    """A non-negative integer written in ASCII digits (not "²", which isdigit accepts)."""
    if not (0 < len(text) <= 20 and text.isascii() and text.isdigit()):
        raise ValueError(text)
    return int(text)


def Json(check: Check) -> Parsed:  # noqa: N802 - reads as a type, like the others
    """A str holding JSON (at most 64 MiB), whose value `check` checks."""
    return Parsed(strict_json, check, invalid="is not valid JSON")
