"""`collector install-handler` / `uninstall-handler`: make the collector the
kernel's core handler, and later put back exactly what was there before.

The previous core_pattern and core_pipe_limit are saved in the state
directory before anything changes; uninstall restores them only if
core_pattern is still ours (someone else's later change is left alone).
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import sys

from ..errors import HandlerError
from ..files import own_dir, write_atomic
from ..service.pipe import KERNEL_ARGS
from .options import command_parser

CORE_PATTERN = "/proc/sys/kernel/core_pattern"
CORE_PIPE_LIMIT = "/proc/sys/kernel/core_pipe_limit"
STATE_DIR = "/var/lib/collector"
CATALOG_DIR = "/usr/lib/systemd/catalog"
CATALOG = os.path.join(os.path.dirname(os.path.dirname(__file__)), "collector.catalog")
SOCKET = "/run/collector/core.sock"
# Pipe handlers running at once; the kernel skips cores beyond that (a crash
# storm), and waits for each handler so /proc/PID stays valid while it runs.
PIPE_LIMIT = 16
MAX_PATTERN = 127
# The pipe handler by default: the interpreter, isolated (-I: no environment,
# user site or script directory on the path) and without site (-S: 3 ms of
# every handler; the script puts site's directories on the path itself),
# runs this script, rather than `-m collector` (runpy): every ms is one of
# each handler's before its first decision.
ENTRY, SETTINGS = "pipe-handler.py", "pipe-settings"
ENTRY_TEXT = '''"""The kernel's pipe handler, written by `collector install-handler`."""
import sys

sys.path += {path!r}
sys.argv[1:1] = {argv!r}
from collector.service import pipe

pipe.settings_at = {settings!r}
from collector.__main__ import run

run()
'''


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().removesuffix("\n")


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except PermissionError:
        raise HandlerError(f"not permitted to write {path}: run as root "
                           "(in the initial user namespace)") from None
    except OSError as e:
        raise HandlerError(f"the kernel refused {value!r} for {path}: {e.strerror}") from None


def _state_path(state_dir: str) -> str:
    return os.path.join(state_dir, "core_pattern.saved")


def _load(state_dir: str) -> dict | None:
    try:
        with open(_state_path(state_dir)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise HandlerError(f"cannot read {_state_path(state_dir)}: {e}") from None


def _save(state_dir: str, state: dict) -> None:
    own_dir(state_dir)
    write_atomic(_state_path(state_dir), json.dumps(state).encode())


def default_command() -> str | None:
    beside = os.path.join(os.path.dirname(sys.executable), "collector")
    return beside if os.access(beside, os.X_OK) else shutil.which("collector")


def entry_script(argv: list[str], settings: str, path: list[str] = ()) -> str:
    """The pipe handler as a script that adds `path` to the interpreter's,
    puts `argv` before the kernel's arguments and keeps its settings at
    `settings` (service/pipe.py), for `python -I [-S]`."""
    return ENTRY_TEXT.format(path=list(path), argv=argv, settings=settings)


def _entry_path(state_dir: str) -> str:
    return os.path.join(state_dir, ENTRY)


def _python(*argv: str) -> str | None:
    """What this interpreter prints for `argv` from /, or None."""
    import subprocess
    try:
        r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60,
                           cwd="/")
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _isolated() -> tuple[str, list[str]] | None:
    """How the kernel can run the interpreter on the entry script so that
    it imports this very collector: the flags, and the directories the
    script adds to the path. `-I -S` with the directories site would add
    (not site's .pth hooks: an editable install's finder needs plain `-I`),
    or None when neither imports this collector."""
    ours = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    show = "import json, sys; print(json.dumps(sys.path))"
    full, bare = _python("-I", "-c", show), _python("-I", "-S", "-c", show)
    if full is None or bare is None:
        return None
    bare_path = json.loads(bare)
    extra = [p for p in json.loads(full) if p not in bare_path]
    where = "import collector, os; print(os.path.dirname(collector.__file__))"
    for flags, path in (("-I -S", extra), ("-I", [])):
        if _python(*flags.split(), "-c", f"import sys; sys.path += {path!r}; {where}") == ours:
            return flags, path
    return None


def pattern(args) -> tuple[str, str | None]:
    """core_pattern, and the text of the entry script it runs (or None)."""
    if args.mode in ("socket", "request"):
        try:
            if not stat.S_ISSOCK(os.stat(args.socket).st_mode):
                raise FileNotFoundError
        except OSError:
            raise HandlerError(f"nothing listens on {args.socket}: start collector-core.socket "
                               "(or `collector serve --socket PATH`) first") from None
        return ("@@" if args.mode == "request" else "@") + args.socket, None
    argv = ["core", "--from-kernel", *(["--report-dir", args.report_dir] if args.report_dir else [])]
    isolated = _isolated() if args.command is None else None
    if isolated is not None:
        flags, path = isolated
        return (f"|{sys.executable} {flags} {_entry_path(args.state_dir)} {KERNEL_ARGS}",
                entry_script(argv, os.path.join(args.state_dir, SETTINGS), path))
    command = args.command or default_command()
    if not command or not os.path.isabs(command) or not os.access(command, os.X_OK):
        raise HandlerError(f"no collector program at {command!r}: give --command /abs/path "
                           "of an executable")
    return f"|{command} {' '.join(argv)} {KERNEL_ARGS}", None


def install(args) -> None:
    if not os.access(CORE_PATTERN, os.W_OK):
        raise HandlerError(f"not permitted to change {CORE_PATTERN}: run as root "
                           "(in the initial user namespace)")
    new, entry = pattern(args)
    if len(new) > MAX_PATTERN:
        raise HandlerError(f"core_pattern would be {len(new)} bytes, the kernel takes "
                           f"{MAX_PATTERN}: use a shorter --command or --state-dir path")
    current = _read(CORE_PATTERN)
    previous = _load(args.state_dir)
    if previous is not None and current == previous["installed"]:  # installed again
        saved = {k: previous[k] for k in ("core_pattern", "core_pipe_limit", "catalog")
                 if k in previous}
    else:
        saved = {"core_pattern": current, "core_pipe_limit": _read(CORE_PIPE_LIMIT)}
    _save(args.state_dir, dict(saved, installed=new))
    try:
        if entry is not None:
            write_atomic(_entry_path(args.state_dir), entry.encode())
        _write(CORE_PATTERN, new)
        if args.mode == "pipe" and int(saved["core_pipe_limit"]) == 0:
            _write(CORE_PIPE_LIMIT, str(PIPE_LIMIT))
    except HandlerError:  # leave everything as this command found it
        _write(CORE_PATTERN, current)
        if previous is None:
            os.unlink(_state_path(args.state_dir))
            _remove_entry(args.state_dir)
        else:
            _save(args.state_dir, previous)
        raise
    print(f"core_pattern = {new} (was {saved['core_pattern']!r}; "
          "`collector uninstall-handler` restores it)")
    if args.catalog_dir and install_catalog(args.catalog_dir):
        saved["catalog"] = os.path.join(args.catalog_dir, "collector.catalog")
        _save(args.state_dir, dict(saved, installed=new))
    delivery = args.outlet.delivery
    if args.mode == "pipe" and not args.report_dir and delivery \
            and not any(sink.spool for sink in delivery.sinks):
        print("collector: warning: only the stdout sink is configured, and a core handler has "
              "no stdout: configure a sink or give --report-dir", file=sys.stderr)


def install_catalog(directory: str) -> bool:
    """The journal catalog entry, so that `journalctl -x` explains a report;
    True if this wrote it (one already there as it should be, say from a
    package, is left to its owner)."""
    path = os.path.join(directory, "collector.catalog")
    with open(CATALOG, "rb") as f:
        text = f.read()
    try:
        with open(path, "rb") as f:
            if f.read() == text:
                return False
    except OSError:
        pass
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        write_atomic(path, text, mode=0o644)
    except OSError as e:
        print(f"collector: warning: journal catalog not installed in {directory}: "
              f"{e.strerror or e}", file=sys.stderr)
        return False
    _update_catalog()
    print(f"journal catalog: {path}")
    return True


def _update_catalog() -> None:
    import subprocess
    try:
        subprocess.run(["journalctl", "--update-catalog"], capture_output=True, timeout=60,
                       check=True)
    except (OSError, subprocess.SubprocessError) as e:
        print(f"collector: warning: journalctl --update-catalog failed: {e}", file=sys.stderr)


def uninstall(args) -> None:
    saved = _load(args.state_dir)
    if saved is None:
        raise HandlerError(f"no saved core_pattern in {args.state_dir}: the collector was "
                           "not installed as the core handler from there")
    current = _read(CORE_PATTERN)
    if current != saved["installed"]:
        raise HandlerError(f"core_pattern was changed since install (now {current!r}): left "
                           f"as it is; delete {_state_path(args.state_dir)} to forget "
                           f"the saved {saved['core_pattern']!r}")
    _write(CORE_PIPE_LIMIT, saved["core_pipe_limit"])
    _write(CORE_PATTERN, saved["core_pattern"])
    if saved.get("catalog"):
        try:
            os.unlink(saved["catalog"])
            _update_catalog()
        except FileNotFoundError:
            pass
    os.unlink(_state_path(args.state_dir))
    _remove_entry(args.state_dir)
    print(f"core_pattern = {saved['core_pattern']} (restored)")


def _remove_entry(state_dir: str) -> None:
    for name in (ENTRY, SETTINGS):
        try:
            os.unlink(os.path.join(state_dir, name))
        except FileNotFoundError:
            pass


def register(sub) -> None:
    i = command_parser(sub, "install-handler", help="make the collector the kernel's core handler",
                       description="Set kernel.core_pattern to run the collector on every "
                       "crash (pipe mode), or to send cores to `collector serve` (socket "
                       "mode '@', Linux 6.16+; request mode '@@', Linux 6.17+, where the "
                       "service declines a crash storm control drops before the kernel "
                       "writes its core). The previous settings are saved and "
                       "`uninstall-handler` restores them.")
    i.add_argument("--mode", choices=("pipe", "socket", "request"), default="pipe")
    i.add_argument("--command", metavar="PATH",
                   help="the collector program the kernel starts (pipe mode; default: this one)")
    i.add_argument("--report-dir", metavar="DIR",
                   help="pipe mode: write reports as files in DIR (default: the configured sinks)")
    i.add_argument("--socket", default=SOCKET, metavar="PATH",
                   help=f"the socket `collector serve` listens on (default {SOCKET})")
    i.add_argument("--state-dir", default=STATE_DIR, metavar="DIR",
                   help=f"where the previous settings are kept (default {STATE_DIR})")
    i.add_argument("--catalog-dir", default=CATALOG_DIR, metavar="DIR",
                   help="where the journal catalog entry goes (default "
                   f"{CATALOG_DIR}; '' for none)")
    i.set_defaults(func=install)
    u = command_parser(sub, "uninstall-handler", help="restore the previous core handler",
                       description="Put back the core_pattern and core_pipe_limit that "
                       "install-handler replaced, if core_pattern is still the collector's.")
    u.add_argument("--state-dir", default=STATE_DIR, metavar="DIR")
    u.set_defaults(func=uninstall)
