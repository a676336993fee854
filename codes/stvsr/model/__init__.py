"""The model layer, below training, evaluation and inference: the training checkpoint format
(:mod:`stvsr.model.checkpoints`)."""
