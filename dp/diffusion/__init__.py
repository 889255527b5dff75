"""Diffusion: EDM preconditioning and training sigmas (:mod:`.edm`), the sampler's noise schedules (:mod:`.schedules`) and its solvers (:mod:`.solvers`)."""
