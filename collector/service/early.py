"""Storm control before the work. A crash's storm key is known before any
unwinding: the executable, the signal and the crashing thread's pc relative
to its module (module name + file offset). It comes from the core's first
notes ('@' socket and pipe mode: the dumping thread's NT_PRSTATUS, then
NT_SIGINFO, NT_AUXV and NT_FILE, which the kernel writes before anything
else) or, before the core exists ('@@' request mode), from /proc of the
task that is dumping. Storm control takes the crash's one token in the
key's bucket here: a suppressed crash costs no analysis, and an admitted
one is not charged again by fingerprint (Delivery.admit).

Bad notes, a core cut short or too much before the end of the notes (more
than HEAD_LIMIT) give no key: then the fingerprint decides after the
analysis, as before. The bytes read here are handed on to the analysis."""
from __future__ import annotations

import os
import time

from ..targets.corehead import (AT_ENTRY, NOTE_ERRORS, NT_AUXV, NT_FILE, NT_PRSTATUS,
                                NT_SIGINFO, PR_REG_NAMES, PT_NOTE, CoreError, auxv, notes,
                                nt_file, program_headers, prstatus, siginfo)
from ..targets.reader import Full, Recording, Stalled

HEAD_LIMIT = 4 << 20      # headers and first notes: ~10 KiB for most processes
RIP = PR_REG_NAMES.index("rip")
PF_DUMPCORE = 0x200       # task flags (/proc/PID/stat field 9): this task writes the core
MAX_TASKS = 16384
SOURCE = "core"           # the report source storm control must list to apply


class Key:
    """exe path, signal number, module (basename, '[anon]' for code no
    file backs) and the pc's offset in that file; None where unknown."""
    __slots__ = ("exe", "signal", "module", "offset")

    def __init__(self, exe: str | None, signal: int | None, module: str | None,
                 offset: int | None):
        self.exe, self.signal, self.module, self.offset = exe, signal, module, offset

    def __str__(self) -> str:
        where = self.module or "?"
        if self.offset is not None:
            where += f"+{self.offset:#x}"
        return f"{self.exe or '?'} signal {self.signal or '?'} at {where}"

    @property
    def id(self) -> str:
        """The storm bucket's name: readable, and never a fingerprint (32
        hex digits). Not hashed: hashlib alone costs the pipe handler ~4 ms."""
        return f"key:{self}"


def where(pc: int | None, mappings) -> tuple[str | None, int | None]:
    """(module, offset) of `pc` among (start, end, file offset, path) mappings."""
    if pc is None:
        return None, None
    for start, end, offset, path in mappings:
        if start <= pc < end:
            if not path or path.startswith("["):
                return path or "[anon]", None
            return os.path.basename(path), pc - start + offset
    return "[anon]", None  # JIT code, or a jump to nowhere: the pc itself says nothing stable


def from_notes(fd: int, idle_timeout: float, head: bytes = b"") -> tuple[Key | None, bytes]:
    """The key from the core's first notes on `fd` (after `head`, what an
    earlier look took from it), and every byte read for it."""
    s = Recording(fd, idle_timeout, HEAD_LIMIT, head)
    pc = signo = entry = files = None
    try:
        phdrs = program_headers(s)
        seg = min((p for p in phdrs if p[0] == PT_NOTE), key=lambda p: p[2], default=None)
        if seg is None:
            return None, bytes(s.kept)
        for kind, desc in notes(s, seg[2], seg[4], []):
            if kind == NT_PRSTATUS and pc is None:
                pc = prstatus(desc)[1][RIP]
            elif kind == NT_SIGINFO:
                signo = siginfo(desc)["signo"]
            elif kind == NT_AUXV:
                entry = auxv(desc).get(AT_ENTRY)
            elif kind == NT_FILE:
                files = nt_file(desc)
                break  # the other threads' notes follow: nothing more the key needs
    except (CoreError, Full, Stalled, OSError, *NOTE_ERRORS):
        return None, bytes(s.kept)
    finally:
        s.close()
    if pc is None or files is None:
        return None, bytes(s.kept)
    maps = [(start, end, off, path) for start, (end, off, path) in files.items()]
    exe = next((path for start, (end, _, path) in files.items()
                if entry is not None and start <= entry < end), None)
    return Key(exe, signo, *where(pc, maps)), bytes(s.kept)


def from_proc(pid: int) -> Key | None:
    """The key of a process dumping core, from /proc: the dumping task's
    pc is its kstkeip (shown for a task that dumps core). The signal is not
    in /proc (the kernel's pidfd says it from Linux 6.19,
    PIDFD_INFO_COREDUMP_SIGNAL): absent here."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        pc = None
        for tid in os.listdir(f"/proc/{pid}/task")[:MAX_TASKS]:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
            if int(fields[6]) & PF_DUMPCORE:  # fields from the 3rd: flags 9th, kstkeip 30th
                pc = int(fields[27])
                break
        from ..targets import procfs  # the service's: not on pipe mode's lean path
        maps = [(m.start, m.end, m.offset, m.path) for m in procfs.maps(pid)]
    except (OSError, ValueError, IndexError):
        return None
    return Key(exe, None, *where(pc, maps))


class Decision:
    """Storm control's answer for one crash: `suppressed` is what the
    key's bucket counted before this admitted one (the report says it)."""
    __slots__ = ("key", "admitted", "suppressed")

    def __init__(self, key: Key, admitted: bool, suppressed: dict | None):
        self.key, self.admitted, self.suppressed = key, admitted, suppressed


def decide(config, key: Key | None, now: float | None = None, then=None) -> Decision | None:
    """Take the crash's token from its key's bucket; None when storm control
    does not decide here (no key, `core` not in [storm] sources, no state
    directory: then the fingerprint decides later, as before). A suppressed
    crash is counted in the local store, under the fingerprint the key's
    last admitted report had (else the key), after `then()` (the pipe
    handler closes its pipe there: the kernel need not write on meanwhile)."""
    from ..delivery.storm import Limiter
    storm = config["storm"]
    if key is None or SOURCE not in storm["sources"]:
        return None
    now = time.time() if now is None else now
    try:
        admitted, suppressed, fingerprint = Limiter(config["collector"]["state_dir"],
                                                    storm).admit(key.id, now)
    except OSError:
        return None
    if not admitted and then is not None:
        then()
    if not admitted and config["store"]["enabled"]:
        _count(config, key, fingerprint, now)
    return Decision(key, admitted, suppressed)


def _count(config, key: Key, fingerprint: str | None, now: float) -> None:
    from ..delivery.storm import iso
    from ..delivery.store import Store, StoreError
    store = Store(config["collector"]["state_dir"], config["store"])
    try:
        store.count_suppressed({"fingerprint": fingerprint or key.id, "time": iso(now),
                                "process": {"exe": key.exe}})
    except StoreError:
        pass  # the storm state still has the count; the next admitted report says it
    finally:
        store.close()
