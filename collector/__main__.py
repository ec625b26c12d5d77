"""The `collector` command (`python -m collector`, and the installed script):
cli.main, guarded so that SIGINT at any moment of our code, the imports
before cli.main's own try and the way out after it included, ends with one
line and exit 130, never a traceback. (Python's own start-up, before this
file runs, is out of our reach.)"""


def main() -> int:
    import sys
    try:
        try:
            argv = sys.argv[1:]
            if "--from-kernel" in argv:  # pipe mode, decided before anything heavy is loaded
                from .service.pipe import suppressed
                if suppressed(argv):
                    return 0
            from .service import control_path
            where = control_path() if ("attach" in argv or "core" in argv and "--from-kernel"
                                       not in argv) and "--no-service" not in argv else None
            if where is not None:
                from .service.control import forward
                code = forward(where, argv)  # the service's warm caches
                if code is not None:
                    return code
            first = None
            if argv[:1] == ["attach"]:  # `attach PID`: stopped before the rest is even imported
                from .streams import std_streams
                std_streams()  # before the capture opens any file
                from .attach import quick
                first = quick(argv[1:])
            from .cli import main as cli_main
            return cli_main(first=first)
        finally:
            # the command is done, or is being ended: a later SIGINT has nothing to stop
            # (_signal: signal's enums would cost a client of the service 2 ms)
            import _signal
            _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    except KeyboardInterrupt:
        import os
        try:
            os.write(2, b"collector: interrupted\n")
        except OSError:
            pass
        from .errors import INTERRUPTED
        return INTERRUPTED


def run() -> None:
    """The program: main(), then out without the interpreter's teardown."""
    code = main()
    from .streams import leave
    leave(code)


if __name__ == "__main__":
    run()
