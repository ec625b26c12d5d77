"""Which frames of a very deep stack a walk keeps: all of them up to KEEP_ALL;
beyond that the innermost KEEP_INNER, the outermost KEEP_OUTER, and for
those between only how many there were and the cycle of pcs they repeat.
Memory stays bounded however deep the stack is: the outer part is a ring."""
from __future__ import annotations

from collections import deque

KEEP_ALL = 10_000
KEEP_INNER = 2_000
KEEP_OUTER = 2_000
MAX_PERIOD = 64         # longest cycle looked for among the frames left out


class Elided:
    """The frames left out, in walk order: their number, and the longest run
    from the first of them that repeats one cycle of pcs (period <= MAX_PERIOD,
    the shortest that fits the first 2 * MAX_PERIOD frames)."""

    def __init__(self):
        self.count = 0
        self.head: list = []            # the first 2 * MAX_PERIOD frames left out
        self.period: int | None = None
        self.run = 0                    # frames from the first that follow the cycle
        self.methods: dict[str, int] = {}
        self._broken = False

    def add(self, frame) -> None:
        self.count += 1
        self.methods[frame.method] = self.methods.get(frame.method, 0) + 1
        if len(self.head) < 2 * MAX_PERIOD:
            self.head.append(frame)
            if len(self.head) == 2 * MAX_PERIOD:
                self._find_period()
        elif self.period is not None and not self._broken:
            if frame.pc == self.head[self.run % self.period].pc:
                self.run += 1
            else:
                self._broken = True

    def finish(self) -> None:
        if self.period is None and len(self.head) < 2 * MAX_PERIOD:
            self._find_period()

    def _find_period(self) -> None:
        pcs = [f.pc for f in self.head]
        for p in range(1, len(pcs) // 2 + 1):
            if all(pcs[i] == pcs[i - p] for i in range(p, len(pcs))):
                self.period, self.run = p, len(pcs)
                return

    @property
    def cycle(self) -> list:
        """One frame per pc of the cycle, in walk order (innermost first)."""
        return self.head[:self.period] if self.period else []

    @property
    def repeats(self) -> int:
        return self.run // self.period if self.period else 0


class Kept:
    """Frames as the walk appends them, innermost first."""

    def __init__(self):
        self.inner: list = []
        self.ring: deque = deque()      # holds up to KEEP_ALL - KEEP_INNER frames
        self.elided: Elided | None = None

    def append(self, frame) -> None:
        if len(self.inner) < KEEP_INNER:
            self.inner.append(frame)
            return
        if len(self.ring) == KEEP_ALL - KEEP_INNER:
            if self.elided is None:
                self.elided = Elided()
            self.elided.add(self.ring.popleft())
        self.ring.append(frame)

    def result(self) -> tuple[list, Elided | None]:
        """(frames kept, what was left out between inner and outer, or None)."""
        ring = self.ring
        if self.elided is not None:
            while len(ring) > KEEP_OUTER:
                self.elided.add(ring.popleft())
            self.elided.finish()
        return self.inner + list(ring), self.elided
