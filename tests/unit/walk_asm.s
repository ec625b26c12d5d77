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
