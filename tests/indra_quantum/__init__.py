"""Tests of tasks/indra_quantum and the indra-quantum flow."""
