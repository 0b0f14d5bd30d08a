"""Shared by all projects: stages, their cache, locks and CLI; records; reporting."""
