"""Segmentation jobs: run, job spec, report, micro-segment rules."""
