"""The Well: reader, writer, embedded solvers and CLI of its physics datasets."""
