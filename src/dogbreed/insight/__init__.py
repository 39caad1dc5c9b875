"""Insight: the Debugger rules, the profile report, and reading a job's outputs (the hooks that write them live in
training.hooks)."""
