"""Tests of tasks/tuning_agent and the tuning-agent flow."""
