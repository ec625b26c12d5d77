"""Named tuples made without collections.namedtuple: importing collections
(or dataclasses, with inspect, ast and dis) costs the collector
milliseconds before it can stop a thread, or of every cold run."""
from _collections import _tuplegetter  # namedtuple's own field reader


class Record(tuple):
    """A tuple whose `_fields` read its items by name, pickled and shown as
    a namedtuple's. A subclass names its fields and writes `__new__` (its
    signature and defaults)."""
    __slots__ = ()
    _fields: tuple = ()

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        for i, name in enumerate(cls._fields):
            setattr(cls, name, _tuplegetter(i, None))

    def __getnewargs__(self):
        return tuple(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + \
            ", ".join(f"{k}={v!r}" for k, v in zip(self._fields, self)) + ")"
