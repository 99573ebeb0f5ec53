"""Hyperparameter tuning with Optuna: study, trial, results, data."""
