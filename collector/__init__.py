"""collector: out-of-process crash backtraces for Linux x86-64."""

__version__ = "0.1.0"
