"""Public data sets: fetching wheels, parsing MovieLens and CDNOW, one shape."""
