"""What the ingest and query routers both stand on: settings, database, auth, errors, logging, metrics.

Nothing here imports `ingest`, `query` or `tally` (checked by import-linter in the test suite).
"""
