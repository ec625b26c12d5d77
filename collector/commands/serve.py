"""`collector serve --socket PATH`: the handler for core_pattern '@PATH'."""
from __future__ import annotations

from ..service.serve import serve
from .options import add_stream_options, add_unwind_options, command_parser, positive


def register(sub) -> None:
    s = command_parser(sub, "serve", help="serve core_pattern '@SOCKET' (socket mode)",
                       description="Accept the cores the kernel sends to an AF_UNIX socket "
                       "(core_pattern '@PATH', Linux 6.16+), one report each; also runs "
                       "under a systemd socket unit (socket activation).")
    s.add_argument("--socket", metavar="PATH", help="where to listen (not needed under systemd)")
    s.add_argument("--jobs", type=positive, default=2, metavar="N",
                   help="cores handled at the same time at most (default 2)")
    add_unwind_options(s)
    add_stream_options(s)
    s.set_defaults(func=serve)
