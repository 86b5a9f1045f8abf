"""Helpers shared by test modules: labs, fakes, packages. No tests here."""
