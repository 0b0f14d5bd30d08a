"""Tests of tasks/lift_sys (IR, templates, oracle too) and the lift-sys flow."""
