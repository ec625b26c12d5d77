"""`collector serve`: the resident crash service (service/serve.py)."""
from __future__ import annotations

from ..service import CONTROL, CONTROL_ENV
from ..service import serve as service
from .options import add_stream_options, add_unwind_options, command_parser, positive


def register(sub) -> None:
    s = command_parser(sub, "serve", help="the resident crash service: core_pattern "
                       "'@SOCKET' or '@@SOCKET', and fast attach",
                       description="Accept the cores the kernel sends to an AF_UNIX socket "
                       "(core_pattern '@PATH', Linux 6.16+, or '@@PATH', 6.17+, where a "
                       "crash storm control drops is declined before it is dumped), one "
                       "report each, and the "
                       "requests of `collector attach` and of the pipe handler on a control "
                       "socket; also runs under systemd socket units (socket activation).")
    s.add_argument("--socket", metavar="PATH", help="where the kernel's cores arrive "
                   "(none: no core socket; not needed under systemd)")
    s.add_argument("--control", metavar="PATH",
                   help=f"the control socket (default ${CONTROL_ENV}, else {CONTROL}; '' for none)")
    s.add_argument("--jobs", type=positive, default=2, metavar="N",
                   help="cores handled at the same time at most (default 2)")
    add_unwind_options(s)
    add_stream_options(s)
    s.set_defaults(func=serve)


def serve(args) -> None:
    from .. import cli  # the service runs its clients' command lines with it
    service.serve(args, cli)
