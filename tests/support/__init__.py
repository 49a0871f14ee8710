"""Helpers only tests use: trace records, small params, checkpoint writers, scored items."""
