"""Held-out metrics as JSON-ready dicts: tagging (topics, scores) and coverage (pairs, related search);
and the best-F1 cut that learnt thresholds are tuned with (`thresholds`)."""
