"""The shared neural recommender machinery: base, epoch loop adapter, data."""
