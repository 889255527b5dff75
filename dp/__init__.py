"""dp: a diffusion-policy control stack, from demonstrations to the robot."""

__version__ = "0.1.0"
