"""The run directory's JSON files as dataclasses: a ``to_dict``/``from_dict`` round trip that loses nothing, and
a ``format`` version that a later release can migrate from.

A round trip never changes a file: keys a record does not know are kept in ``extra`` and written back, and
fields a file lacks take their defaults but stay absent when it is written back (an earlier search's devices are
merged into a new ``selected.json`` as they were). A file without ``format`` is format 1 (every file written
before the key existed); a newer format is refused with one line that says to upgrade.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..errors import OFAError

FORMAT = 1  # what this release writes and the newest it reads

R = TypeVar("R", bound="Record")


def check_format(d: Mapping[str, Any], where: str, newest: int = FORMAT) -> int:
    """The ``format`` of a file's top-level object (1 when it has none); an unknown one is an error."""
    value = d.get("format", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OFAError(f"{where} has an unknown format {value!r}; this ofa-supernet reads format 1 to {newest}")
    if value > newest:
        from .. import __version__

        raise OFAError(f"{where} has format {value}; this ofa-supernet ({__version__}) reads format {newest}"
                       f"{'' if newest == 1 else ' and older'}: upgrade ofa-supernet")
    return value


@dataclass(kw_only=True)
class Record:
    """A JSON object as a dataclass. Subclasses declare the keys they know as fields, in the order written."""

    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # keys of the file this release does not know
    # known keys the file did not have: left out again by to_dict (not an init argument, not compared)
    _absent: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    @classmethod
    def _keys(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.init and f.name != "extra"]

    @classmethod
    def from_dict(cls: type[R], d: Mapping[str, Any], where: str | None = None) -> R:
        """The record of ``d``; ``where`` (the file, or the entry of one) names it in errors."""
        where = where or cls.__name__
        if not isinstance(d, Mapping):
            raise OFAError(f"{where} is not a JSON object (got {type(d).__name__})")
        keys = cls._keys()
        required = [f.name for f in fields(cls) if f.name in keys and f.default is MISSING
                    and f.default_factory is MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise OFAError(f"{where} has no {missing[0]!r} entry")
        values = {k: cls._decode(k, d[k], where) for k in keys if k in d}
        record = cls(**values, extra={k: v for k, v in d.items() if k not in keys and k != "format"})
        object.__setattr__(record, "_absent", frozenset(k for k in keys if k not in d))
        return record

    def to_dict(self) -> dict[str, Any]:
        out = {k: self._encode(k, getattr(self, k)) for k in self._keys() if k not in self._absent}
        out.update(self.extra)
        return out

    @classmethod
    def _decode(cls, key: str, value: Any, where: str) -> Any:
        """A field's value from its JSON form (nested records override this)."""
        return value

    def _encode(self, key: str, value: Any) -> Any:
        """A field's JSON form."""
        return value


@dataclass(kw_only=True)
class FileRecord(Record):
    """A record that is a whole file: it carries the ``format`` it was written in."""

    FILE: ClassVar[str] = "record.json"  # the file's name, in errors about a record that is not read from disk
    # Whether format 1 is written: not where the file's top-level keys are a fixed contract (selected.json)
    WRITES_FORMAT_1: ClassVar[bool] = True

    @classmethod
    def from_dict(cls: type[R], d: Mapping[str, Any], where: str | None = None) -> R:
        where = where or cls.FILE
        if isinstance(d, Mapping):
            check_format(d, where)
        return super().from_dict(d, where)

    def to_dict(self) -> dict[str, Any]:
        head = {"format": FORMAT} if FORMAT > 1 or self.WRITES_FORMAT_1 else {}
        return {**head, **super().to_dict()}

    @classmethod
    def read(cls: type[R], path: str | os.PathLike, hint: str = "it may be truncated or corrupt") -> R:
        """The record in the JSON file ``path``; a broken file is one clear line ending with ``hint``."""
        from ..io import read_json  # imports torch: the command line reads records without it

        d = read_json(path, hint=hint)
        if isinstance(d, Mapping):
            check_format(d, str(path))  # its own advice (upgrade), not the hint
        try:
            return cls.from_dict(d, str(path))
        except OFAError as e:
            raise OFAError(f"{e}; {hint}") from None

    def write(self, path: str | os.PathLike) -> Path:
        """Write the record as indented JSON, atomically (readers never see half a file)."""
        from ..io import atomic_write

        path = Path(path)
        text = json.dumps(self.to_dict(), indent=2)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
        return path
