"""Tailor models."""
