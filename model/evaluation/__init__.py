"""Held-out metrics as JSON-ready dicts: tagging (topics, scores) and coverage (pairs, related search)."""
