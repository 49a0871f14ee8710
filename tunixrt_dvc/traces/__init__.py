"""Reasoning traces: the record schemas, sources and stores (JSONL, SQLite, PostgreSQL, UNGAR),
the export to training examples, and tunix-rt's HTTP API."""
