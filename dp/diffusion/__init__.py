"""Diffusion: EDM preconditioning and training sigmas (:mod:`.edm`), the DDIM sampler (:mod:`.sampler`)."""
