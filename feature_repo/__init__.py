"""Tailor feature_repo."""
