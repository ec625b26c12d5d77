"""`collector core`: a report from an ELF core file, or from the core the
kernel hands to a core_pattern handler (pipe mode; socket mode is `serve`)."""
from __future__ import annotations

from ..collect import from_core_file
from ..errors import UsageError
from ..service.kernel import KERNEL_ARGS, handle_kernel_core, kernel_args
from .options import add_stream_options, add_unwind_options, command_parser


def core(args) -> dict | None:
    if args.from_kernel:
        kernel, errors = kernel_args(args.file_or_specs)
        args.outlet.emit(handle_kernel_core(0, kernel, errors, args), symbolize=False)
        return None
    if len(args.file_or_specs) != 1:
        raise UsageError("give one core file (or --from-kernel with core_pattern specifiers)")
    return from_core_file(args.file_or_specs[0], args.max_frames, args.outlet.images)


def register(sub) -> None:
    c = command_parser(sub, "core", help="backtrace every thread of a core dump",
                       description="Report on an ELF core file, or (--from-kernel) on the core "
                       "the kernel pipes to a core_pattern handler: "
                       f"'|/path/to/collector core --from-kernel {KERNEL_ARGS}'.")
    c.add_argument("file_or_specs", nargs="*", metavar="FILE | LETTER=VALUE",
                   help="a core file; with --from-kernel, core_pattern specifiers")
    c.add_argument("--from-kernel", action="store_true",
                   help="read the core from stdin, as a core_pattern '|' handler")
    add_unwind_options(c)
    add_stream_options(c)
    c.set_defaults(func=core)
