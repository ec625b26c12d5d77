"""`collector flush`: deliver the reports kept in the spool."""
from __future__ import annotations

from .options import command_parser


def register(sub) -> None:
    f = command_parser(sub, "flush", help="deliver the reports kept in the spool",
                       description="Send every spooled report to the sinks still owed it, "
                       "oldest first, each once.")
    f.set_defaults(func=lambda args: print(args.outlet.delivery.flush()))
