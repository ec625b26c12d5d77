"""The crash service: cores the kernel hands over (pipe mode, and the
socket of `collector serve`), each turned into a report however it fails."""
