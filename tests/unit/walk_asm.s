# Two functions with hand-written CFI at known offsets: callee is entered
# from caller, so every instruction boundary of callee's prologue and
# epilogue can be tested on its own.
    .text
    .globl caller
    .type caller, @function
caller:
    .cfi_startproc
    .cfi_undefined rip
    call callee
after_call:
    hlt
    .cfi_endproc
    .size caller, .-caller

    .globl callee
    .type callee, @function
callee:
    .cfi_startproc
    push %rbp                 # +0
    .cfi_def_cfa_offset 16
    .cfi_offset rbp, -16
    mov %rsp, %rbp            # +1
    .cfi_def_cfa_register rbp
    push %rbx                 # +4
    .cfi_offset rbx, -24
    sub $8, %rsp              # +5
    nop                       # +9
    add $8, %rsp              # +10
    pop %rbx                  # +14
    .cfi_restore rbx
    leave                     # +15
    .cfi_def_cfa rsp, 8
    ret                       # +16
    .cfi_endproc
    .size callee, .-callee

# Code without CFI for the checks of guessed frames (tests/unit/test_fallback.py):
# leaf is the callee; direct calls to it, one through a thunk and one through
# a PLT-like stub, and calls elsewhere that a stale return address may follow.
    .globl leaf
    .type leaf, @function
leaf:
    nop
    nop
    ret
    .size leaf, .-leaf

    .globl calls_leaf
    .type calls_leaf, @function
calls_leaf:
    call leaf
    nop
    ret
    .size calls_leaf, .-calls_leaf

    .globl calls_other
    .type calls_other, @function
calls_other:
    call calls_leaf
    nop
    ret
    .size calls_other, .-calls_other

    .globl thunk
    .type thunk, @function
thunk:
    jmp leaf
    .size thunk, .-thunk

    .globl calls_thunk
    .type calls_thunk, @function
calls_thunk:
    call thunk
    nop
    ret
    .size calls_thunk, .-calls_thunk

    .globl stub
    .type stub, @function
stub:
    endbr64
    bnd jmp *leaf_slot(%rip)
    .size stub, .-stub

    .globl calls_stub
    .type calls_stub, @function
calls_stub:
    call stub
    nop
    ret
    .size calls_stub, .-calls_stub

# With CFI: 8 bytes of locals below the return address at the call.
    .globl cfi_caller
    .type cfi_caller, @function
cfi_caller:
    .cfi_startproc
    sub $8, %rsp
    .cfi_adjust_cfa_offset 8
    call leaf
    add $8, %rsp
    .cfi_adjust_cfa_offset -8
    ret
    .cfi_endproc
    .size cfi_caller, .-cfi_caller

# Exactly one call to callee (whose return address a test smashes), and its caller.
    .globl calls_callee
    .type calls_callee, @function
calls_callee:
    .cfi_startproc
    call callee
    nop
    ret
    .cfi_endproc
    .size calls_callee, .-calls_callee

    .globl grand
    .type grand, @function
grand:
    .cfi_startproc
    call calls_callee
    nop
    ret
    .cfi_endproc
    .size grand, .-grand

# A signal trampoline: the interrupted rip at [rsp], its rsp at [rsp+8].
    .globl sigtramp
    .type sigtramp, @function
    .cfi_startproc simple
    .cfi_signal_frame
    .cfi_def_cfa rsp, 16
    .cfi_offset rip, -16
    .cfi_offset rsp, -8
    nop
sigtramp:
    nop
    hlt
    .cfi_endproc
    .size sigtramp, .-sigtramp

    .data
    .globl leaf_slot
leaf_slot:
    .quad leaf
