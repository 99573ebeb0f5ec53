"""Point-in-time user and item feature snapshots."""
