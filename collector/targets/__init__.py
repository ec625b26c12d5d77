"""Where machine state comes from; each target yields an AddressSpace."""
