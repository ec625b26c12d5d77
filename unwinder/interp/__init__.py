"""Interpreter frames read from memory (DESIGN.md, "interp/")."""
from .cpython import Found, PyFrame, PyStack, python_frames

__all__ = ["Found", "PyFrame", "PyStack", "python_frames"]
