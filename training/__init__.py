"""Tailor training."""
