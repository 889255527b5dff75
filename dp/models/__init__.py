"""Models: the MoDE transformer (:mod:`.mode`), noise-routed experts (:mod:`.moe`), encoders
(:mod:`.encoders`), and the trainable :class:`~dp.models.diffusion_policy.DiffusionPolicy`."""
