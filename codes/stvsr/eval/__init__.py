"""Evaluation: MATLAB-exact metrics (:mod:`.metrics`) and the STVSR test protocol as data (:mod:`.protocol`)."""
