"""Tailor serving."""
