"""Data lifecycle: project settings (retention), retention, erasure and suppression."""
