"""Which frames of a very deep stack a walk keeps: all of them up to KEEP_ALL;
beyond that the innermost KEEP_INNER, the outermost KEEP_OUTER, and for
those between only how many there were and the cycle of pcs they repeat.
Memory stays bounded however deep the stack is: the walk appends to one
list, and bound() leaves out what is beyond KEEP_ALL, a batch at a time."""
from __future__ import annotations

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

    def extend(self, frames: list) -> None:
        """The next frames left out, in walk order."""
        self.count += len(frames)
        methods = self.methods
        for frame in frames:
            methods[frame.method] = methods.get(frame.method, 0) + 1
        room = 2 * MAX_PERIOD - len(self.head)
        if room > 0:
            self.head += frames[:room]
            frames = frames[room:]
            if len(self.head) == 2 * MAX_PERIOD:
                self._find_period()
        if frames and self.period is not None and not self._broken:
            self._follow([f.pc for f in frames])

    def _follow(self, pcs: list[int]) -> None:
        """Count the pcs that go on with the cycle, up to the first that does not."""
        period = self.period
        phase = self.run % period
        cycle = [f.pc for f in self.head[:period]]
        cycle = cycle[phase:] + cycle[:phase]
        expected = cycle * (len(pcs) // period + 1)
        if pcs == expected[:len(pcs)]:
            self.run += len(pcs)
            return
        self.run += next(i for i, (pc, want) in enumerate(zip(pcs, expected)) if pc != want)
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
    """Frames as the walk appends them (`append`, a list's), innermost
    first; `bound`, called every so often, leaves out those between the
    innermost KEEP_INNER and the last KEEP_ALL - KEEP_INNER."""

    def __init__(self):
        self.frames: list = []
        self.append = self.frames.append
        self.elided: Elided | None = None

    def bound(self, outer: int = KEEP_ALL - KEEP_INNER) -> None:
        frames = self.frames
        excess = len(frames) - KEEP_INNER - outer
        if excess > 0:
            if self.elided is None:
                self.elided = Elided()
            self.elided.extend(frames[KEEP_INNER:KEEP_INNER + excess])
            del frames[KEEP_INNER:KEEP_INNER + excess]

    def result(self) -> tuple[list, Elided | None]:
        """(frames kept, what was left out between inner and outer, or None)."""
        self.bound()
        if self.elided is not None:
            self.bound(KEEP_OUTER)
            self.elided.finish()
        return self.frames, self.elided
