"""Insight: smdebug hook and rules, profiling and its report, local tuning."""
