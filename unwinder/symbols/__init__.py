"""pc -> names: ELF symbol tables (symtab), DWARF lines and inlined calls
(lines, over line_program and dwarf_scan), demangling (demangle, over rust and cxx).

Nothing is imported here, so that the symbol table, which every walk needs,
does not bring pyelftools or ctypes with it."""
