"""The tracking plan: one JSON Schema per project and event name, written through /v1/schemas."""
