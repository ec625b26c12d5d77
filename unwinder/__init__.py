"""The unwind engine: pure computation over an AddressSpace (see DESIGN.md)."""
