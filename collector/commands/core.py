"""`collector core`: a report from an ELF core file, or from the core the
kernel hands to a core_pattern handler (pipe mode; socket mode is `serve`)."""
from __future__ import annotations

from ..errors import UsageError
from ..service import CONTROL, CONTROL_ENV, pipe
from ..service.pipe import KERNEL_ARGS, kernel_args
from .options import add_stream_options, add_unwind_options, command_parser


def core(args) -> dict | None:
    """In this process: the service, when one runs, was asked first
    (control.forward, before this command line was even parsed)."""
    if args.from_kernel:
        return from_kernel(args)
    from ..core import from_file, named, open_core_file
    path = named(args)
    return from_file(open_core_file(path), path, args, args.outlet.images)


def from_kernel(args) -> None:
    """Pipe mode: the service, the pipe handler's early decision (storm
    control), or the report made here. Its modules are imported only here:
    a core file needs none of them."""
    if args.exe or args.sysroot or args.debug_dir:
        raise UsageError("--exe, --sysroot and --debug-dir are for a core file")
    from ..service import control
    from ..service.kernel import handle_kernel_core
    kernel, errors = kernel_args(args.file_or_specs)
    # the first step (service/pipe.py) ran before the command was loaded, or runs now
    if pipe.taken is None and control.hand_off(kernel, errors):
        return None  # the service reports it
    decision, head = pipe.taken or pipe.look(0, args.outlet.config, args.idle_timeout)
    if decision is not None and not decision.admitted:
        pipe.drop(decision, args.outlet.config["log"], args.log_level)
        return None
    args.outlet.emit(handle_kernel_core(0, kernel, errors, args, head=head),
                     symbolize=False, early=decision)
    return None


def register(sub) -> None:
    c = command_parser(sub, "core", help="backtrace every thread of a core dump",
                       description="Report on an ELF core file, or (--from-kernel) on the core "
                       "the kernel pipes to a core_pattern handler: "
                       f"'|/path/to/collector core --from-kernel {KERNEL_ARGS}'. "
                       "The files a core mapped are looked for at their recorded paths, "
                       "under --sysroot, beside the core, by build-id in the debug "
                       "directories and through debuginfod ($DEBUGINFOD_URLS), each checked "
                       "against the build-id the core holds. When the resident service "
                       f"runs (`collector serve`, control socket ${CONTROL_ENV} or {CONTROL}), "
                       "it reads a core file with its warm caches: this process opens the "
                       "file and hands it over.")
    c.add_argument("file_or_specs", nargs="*", metavar="FILE | LETTER=VALUE",
                   help="a core file; with --from-kernel, core_pattern specifiers")
    c.add_argument("--from-kernel", action="store_true",
                   help="read the core from stdin, as a core_pattern '|' handler")
    c.add_argument("--exe", metavar="FILE",
                   help="the executable that dumped core (as gdb EXE CORE, eu-stack -e)")
    c.add_argument("--sysroot", metavar="DIR",
                   help="look for each mapped file under DIR first (as gdb's sysroot)")
    c.add_argument("--debug-dir", action="append", default=[], metavar="DIR",
                   help="a debug directory (with .build-id/) to look in first, for the "
                   "mapped files and their debug files; may be repeated")
    add_unwind_options(c)
    add_stream_options(c)
    c.add_argument("--no-service", action="store_true",
                   help="read a core file in this process even when the service runs")
    c.set_defaults(func=core)
