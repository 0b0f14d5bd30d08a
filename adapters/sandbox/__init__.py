"""Isolated execution of untrusted Python: the host side, the zygote worker, their frames."""
