"""ptrace(2) through ctypes on the libc already loaded (CDLL(None)).

python-ptrace's binding finds libc with `ctypes.util.find_library`, which
runs `ldconfig -p`: milliseconds before the first thread can be stopped.
This is the part of it the collector uses, with the same names and the same
error (PtraceError, errno set) so the callers read as before."""
from __future__ import annotations

import ctypes
import os

PTRACE_CONT = 7
PTRACE_DETACH = 17
PTRACE_GETREGS = 12
PTRACE_GETSIGINFO = 0x4202
PTRACE_GETEVENTMSG = 0x4201

_libc = ctypes.CDLL(None, use_errno=True)
_ptrace = _libc.ptrace
_ptrace.argtypes = (ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_ptrace.restype = ctypes.c_long


class PtraceError(Exception):
    def __init__(self, message: str, errno: int | None = None, pid: int | None = None):
        super().__init__(message)
        self.errno = errno
        self.pid = pid


class user_regs_struct(ctypes.Structure):  # <sys/user.h>, x86-64
    _fields_ = [(name, ctypes.c_ulong) for name in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
        "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
        "gs_base", "ds", "es", "fs", "gs")]


class _sigfault(ctypes.Structure):
    _fields_ = [("_addr", ctypes.c_void_p)]


class siginfo(ctypes.Structure):  # siginfo_t: 128 bytes, the union at offset 16
    _fields_ = [("si_signo", ctypes.c_int), ("si_errno", ctypes.c_int),
                ("si_code", ctypes.c_int), ("_pad0", ctypes.c_int),
                ("_sigfault", _sigfault), ("_rest", ctypes.c_byte * 104)]


def ptrace(command: int, pid: int = 0, arg1: int = 0, arg2: int = 0) -> int:
    result = _ptrace(command, pid, arg1, arg2)
    if result == -1:
        errno = ctypes.get_errno()
        raise PtraceError(f"ptrace(cmd={command}, pid={pid}, {arg1!r}, {arg2!r}) error "
                          f"#{errno}: {os.strerror(errno)}", errno=errno, pid=pid)
    return result


def ptrace_getregs(pid: int) -> user_regs_struct:
    regs = user_regs_struct()
    ptrace(PTRACE_GETREGS, pid, 0, ctypes.addressof(regs))
    return regs


def ptrace_getsiginfo(pid: int) -> siginfo:
    info = siginfo()
    ptrace(PTRACE_GETSIGINFO, pid, 0, ctypes.addressof(info))
    return info


def ptrace_geteventmsg(pid: int) -> int:
    msg = ctypes.c_ulong()
    ptrace(PTRACE_GETEVENTMSG, pid, 0, ctypes.addressof(msg))
    return msg.value
