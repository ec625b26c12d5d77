"""One module per command: its arguments and the call it makes. Nothing here
is shared but options.py; the work is done by the library modules below."""

# command -> the module that registers it
COMMANDS = {"attach": "attach", "run": "run", "watch": "watch", "core": "core",
            "serve": "serve", "install-handler": "install_handler",
            "uninstall-handler": "install_handler", "symbolize": "symbolize", "flush": "flush",
            "list": "list", "show": "show"}
