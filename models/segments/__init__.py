"""User segmentation: scaling, clustering with k selection, significance-guarded consolidation,
readable labels and id matching across runs. numpy / scipy / scikit-learn only."""
