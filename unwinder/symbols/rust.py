"""Rust symbol names, legacy and v0, printed as addr2line -C and gdb print
them (libiberty without DMGL_VERBOSE, `c++filt -i`): no legacy hash, no
crate disambiguators; the symbol's linkage name keeps both. libstdc++ has no Rust demangler and no maintained Python
package is worth a dependency for a few hundred lines, so this one is ours.
"""
from __future__ import annotations

import re

MAX_DEPTH = 200   # nesting in a v0 name


class Invalid(Exception):
    """Not a well-formed Rust name."""


def demangle(name: str) -> str | None:
    """The readable name of a Rust symbol (no `@version`), None when `name`
    is not one. Raises Invalid (or ValueError, IndexError, RecursionError,
    UnicodeError on garbage: demangle.demangle folds them)."""
    if name.startswith("_R"):
        return _V0(name[2:]).symbol()
    if _LEGACY.match(name):
        return _legacy(name)
    return None


# ------------------------------------------------------------ legacy

_LEGACY = re.compile(r"_ZN.*17h[0-9a-f]{16}E$")
_ESCAPES = {"SP": "@", "BP": "*", "RF": "&", "LT": "<", "GT": ">", "LP": "(",
            "RP": ")", "C": ","}


def _legacy(name: str) -> str:
    rest, parts = name[3:-1], []
    while rest:
        m = re.match(r"(\d+)", rest)
        if not m:
            raise Invalid
        n = int(m.group(1))
        part, rest = rest[m.end():m.end() + n], rest[m.end() + n:]
        if len(part) != n:
            raise Invalid
        parts.append(_legacy_part(part))
    return "::".join(parts[:-1])  # the last part is the hash (h + 16 hex digits)


def _legacy_part(part: str) -> str:
    if part.startswith("_$"):
        part = part[1:]
    out = []
    while part:
        if part.startswith(".."):
            out.append("::")
            part = part[2:]
        elif part.startswith("$"):
            end = part.find("$", 1)
            if end < 0:
                raise Invalid
            code = part[1:end]
            if code in _ESCAPES:
                out.append(_ESCAPES[code])
            elif code.startswith("u") and re.fullmatch(r"[0-9a-f]+", code[1:]):
                out.append(chr(int(code[1:], 16)))
            else:
                raise Invalid
            part = part[end + 1:]
        else:
            m = re.match(r"[^$]+?(?=\$|\.\.|$)", part)
            out.append(m.group(0))
            part = part[m.end():]
    return "".join(out)


# ---------------------------------------------------------------- v0

_BASIC = {"a": "i8", "b": "bool", "c": "char", "d": "f64", "e": "str", "f": "f32",
          "h": "u8", "i": "isize", "j": "usize", "l": "i32", "m": "u32", "n": "i128",
          "o": "u128", "s": "i16", "t": "u16", "u": "()", "v": "...", "x": "i64",
          "y": "u64", "z": "!", "p": "_"}
_B62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


class _V0:
    """A reader of one v0 name (the part after `_R`) that prints as it goes."""

    def __init__(self, text: str):
        self.s = text
        self.pos = 0
        self.out: list[str] = []
        self.printing = True
        self.depth = 0
        self.bound_lifetimes = 0

    def symbol(self) -> str:
        if self.s[:1].isdigit():
            raise Invalid  # an encoding version we do not know
        self.path(True)
        # what follows (the instantiating crate, a '.llvm.N' suffix) is not
        # printed, and addr2line does not check it either
        return "".join(self.out)

    # primitives
    def emit(self, text: str):
        if self.printing:
            self.out.append(text)

    def next(self) -> str:
        if self.pos >= len(self.s):
            raise Invalid
        self.pos += 1
        return self.s[self.pos - 1]

    def eat(self, c: str) -> bool:
        if self.s.startswith(c, self.pos):
            self.pos += 1
            return True
        return False

    def base62(self) -> int:
        if self.eat("_"):
            return 0
        value = 0
        while not self.eat("_"):
            c = self.next()
            if c not in _B62:
                raise Invalid
            value = value * 62 + _B62.index(c)
        return value + 1

    def opt_base62(self, tag: str) -> int:
        return self.base62() + 1 if self.eat(tag) else 0

    def decimal(self) -> int:
        m = re.compile(r"0|[1-9]\d*").match(self.s, self.pos)
        if not m:
            raise Invalid
        self.pos = m.end()
        return int(m.group(0))

    def ident(self) -> str:
        punycode = self.eat("u")
        n = self.decimal()
        self.eat("_")
        text = self.s[self.pos:self.pos + n]
        if len(text) != n:
            raise Invalid
        self.pos += n
        if not punycode:
            return text
        ascii_part, _, coded = text.rpartition("_")
        return ((ascii_part + "-" if ascii_part else "") + coded).encode().decode("punycode")

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Invalid

    def backref(self, then):
        start = self.pos - 1
        target = self.base62()
        if target >= start:
            raise Invalid
        saved = self.pos
        self.pos = target
        self.enter()
        then()
        self.depth -= 1
        self.pos = saved

    def sep_list(self, item, sep: str) -> int:
        count = 0
        while not self.eat("E"):
            if count:
                self.emit(sep)
            item()
            count += 1
        return count

    # grammar
    def path(self, in_value: bool):
        self.enter()
        tag = self.next()
        if tag == "C":
            self.opt_base62("s")  # the crate's disambiguator, not printed
            self.emit(self.ident())
        elif tag == "N":
            ns = self.next()
            if not ns.isalpha():
                raise Invalid
            self.path(in_value)
            dis = self.opt_base62("s")
            name = self.ident()
            if ns.isupper():
                kind = {"C": "closure", "S": "shim"}.get(ns, ns)
                self.emit("::{" + kind + (":" + name if name else "") + f"#{dis}" + "}")
            elif name:
                self.emit("::" + name)
        elif tag in "MXY":
            if tag != "Y":
                self.opt_base62("s")
                printing, self.printing = self.printing, False
                self.path(False)
                self.printing = printing
            self.emit("<")
            self.type()
            if tag != "M":
                self.emit(" as ")
                self.path(False)
            self.emit(">")
        elif tag == "I":
            self.path(in_value)
            self.emit("::<" if in_value else "<")
            self.sep_list(self.generic_arg, ", ")
            self.emit(">")
        elif tag == "B":
            self.backref(lambda: self.path(in_value))
        else:
            raise Invalid
        self.depth -= 1

    def generic_arg(self):
        if self.eat("L"):
            self.lifetime(self.base62())
        elif self.eat("K"):
            self.const()
        else:
            self.type()

    def lifetime(self, index: int):
        if index == 0:
            self.emit("'_")
            return
        depth = self.bound_lifetimes - index
        if depth < 0:
            raise Invalid
        self.emit("'" + chr(ord("a") + depth) if depth < 26 else f"'_{depth}")

    def binder(self, then):
        bound = self.opt_base62("G")
        if bound:
            self.emit("for<")
            for i in range(bound):
                if i:
                    self.emit(", ")
                self.bound_lifetimes += 1
                self.lifetime(1)
            self.emit("> ")
        then()
        self.bound_lifetimes -= bound

    def type(self):
        self.enter()
        tag = self.next()
        if tag in _BASIC:
            self.emit(_BASIC[tag])
        elif tag in "RQ":
            self.emit("&")
            if self.eat("L"):
                lt = self.base62()
                if lt:
                    self.lifetime(lt)
                    self.emit(" ")
            if tag == "Q":
                self.emit("mut ")
            self.type()
        elif tag in "PO":
            self.emit("*const " if tag == "P" else "*mut ")
            self.type()
        elif tag in "AS":
            self.emit("[")
            self.type()
            if tag == "A":
                self.emit("; ")
                self.const()
            self.emit("]")
        elif tag == "T":
            self.emit("(")
            if self.sep_list(self.type, ", ") == 1:
                self.emit(",")
            self.emit(")")
        elif tag == "F":
            self.binder(self.fn_sig)
        elif tag == "D":
            self.emit("dyn ")
            self.binder(lambda: self.sep_list(self.dyn_trait, " + "))
            if not self.eat("L"):
                raise Invalid
            lt = self.base62()
            if lt:
                self.emit(" + ")
                self.lifetime(lt)
        elif tag == "B":
            self.backref(self.type)
        else:
            self.pos -= 1
            self.path(False)
        self.depth -= 1

    def fn_sig(self):
        unsafe = self.eat("U")
        abi = None
        if self.eat("K"):
            abi = "C" if self.eat("C") else self.ident().replace("_", "-")
        if unsafe:
            self.emit("unsafe ")
        if abi:
            self.emit(f'extern "{abi}" ')
        self.emit("fn(")
        self.sep_list(self.type, ", ")
        self.emit(")")
        if not self.eat("u"):
            self.emit(" -> ")
            self.type()

    def dyn_trait(self):
        is_open = self.path_open_generics()
        while self.eat("p"):
            self.emit(", " if is_open else "<")
            is_open = True
            self.emit(self.ident() + " = ")
            self.type()
        if is_open:
            self.emit(">")

    def path_open_generics(self) -> bool:
        if self.eat("B"):
            result = []
            self.backref(lambda: result.append(self.path_open_generics()))
            return result[0]
        if self.eat("I"):
            self.path(False)
            self.emit("<")
            self.sep_list(self.generic_arg, ", ")
            return True
        self.path(False)
        return False

    def const(self):
        self.enter()
        tag = self.next()
        if tag == "p":
            self.emit("_")
        elif tag == "B":
            self.backref(self.const)
        elif tag in "htmyoj":
            self.emit(self.const_uint())  # no `: type` suffix (c++filt's verbose form)
        elif tag in "aslxni":
            sign = "-" if self.eat("n") else ""
            self.emit(sign + self.const_uint())
        elif tag == "b":
            value = self.const_uint()
            if value not in ("0", "1"):
                raise Invalid
            self.emit("true" if value == "1" else "false")
        elif tag == "c":
            self.emit(_char_literal(int(self.const_uint())))
        else:
            raise Invalid  # str, reference, array, tuple and ADT constants: left mangled
        self.depth -= 1

    def const_uint(self) -> str:
        m = re.compile(r"([0-9a-f]*)_").match(self.s, self.pos)
        if not m:
            raise Invalid
        self.pos = m.end()
        digits = m.group(1).lstrip("0") or "0"
        return str(int(digits, 16)) if len(digits) <= 16 else "0x" + m.group(1)


def _char_literal(value: int) -> str:
    c = chr(value)
    escapes = {"\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", "'": "\\'"}
    if c in escapes:
        return f"'{escapes[c]}'"
    return f"'{c}'" if c.isprintable() else f"'\\u{{{value:x}}}'"
