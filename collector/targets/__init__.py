"""Where machine state comes from: a live process, a traced one, a core.
Each yields an AddressSpace the engine unwinds. Defaults shared by them:"""

RED_ZONE = 128                  # bytes below rsp a leaf function may use
GUARD_GAP = 1 << 20             # the kernel's stack_guard_gap: rsp of a stack overflow is in it
DEFAULT_STACK_WINDOW = 256 << 10
DEFAULT_STOP_TIMEOUT = 2.0
DEFAULT_KEEP = 32 << 20         # bytes of a streamed core kept in memory in all
