"""Training: read seeds, fit and evaluate through `model`, write a versioned bundle."""
