"""Reliability tests: the `record` fixture lives in tests/conftest.py (the table is printed at the end of the run)."""
