"""DWARF call frame information: FDE lookup, the CFA program, expressions, step().

Our own small parser and interpreter (see DESIGN.md, "Known pitfalls"): FDEs are
found through .eh_frame_hdr and parsed one at a time, rows are cached per pc.
"""
from .encoding import CfiError
from .expr import RegisterUnknown, evaluate
from .program import (EXPRESSION, OFFSET, REGISTER, SAME_VALUE, UNDEFINED, VAL_EXPRESSION,
                      VAL_OFFSET, CfaRule, Rule)
from .table import CfiTable, Row, step

__all__ = [
    "CfiError", "CfiTable", "CfaRule", "RegisterUnknown", "Row", "Rule", "evaluate", "step",
    "UNDEFINED", "SAME_VALUE", "OFFSET", "VAL_OFFSET", "REGISTER", "EXPRESSION", "VAL_EXPRESSION",
]
