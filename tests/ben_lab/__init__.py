"""Tests of tasks/ben_lab, the lab chat and the ben-lab flow."""
