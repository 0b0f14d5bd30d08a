"""Tests of adapters/, one package per adapter package."""
