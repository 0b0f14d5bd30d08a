"""Isolated execution of untrusted Python: host side, zygote worker, frames."""
