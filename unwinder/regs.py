"""x86-64 DWARF register numbers (System V psABI, figure 3.36), and a
frame's registers: a list of COUNT values by number, None where unknown
(a list, not a dict: a walk makes one per frame)."""

RAX, RDX, RCX, RBX, RSI, RDI, RBP, RSP = range(8)
R8, R9, R10, R11, R12, R13, R14, R15 = range(8, 16)
RIP = 16  # the return-address column

NAMES = ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp",
         "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip")
NUMBERS = {name: number for number, name in enumerate(NAMES)}
COUNT = len(NAMES)  # registers a frame keeps: the general ones and the return address


def known(regs: dict[int, int]) -> list:
    """A frame's registers from {number: value} (numbers past rip are not kept)."""
    out = [None] * COUNT
    for number, value in regs.items():
        if 0 <= number < COUNT:
            out[number] = value
    return out


def as_dict(regs: list) -> dict[int, int]:
    """{number: value} of the known ones."""
    return {number: value for number, value in enumerate(regs) if value is not None}


def by_name(regs: dict[int, int]) -> dict[str, int]:
    """Known registers only: an unknown register is absent, never 0."""
    return {NAMES[n]: v for n, v in sorted(regs.items()) if n < len(NAMES)}
