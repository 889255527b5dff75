"""dp: a diffusion-policy control stack, from demonstrations to the robot."""

import os

# OpenMP threads that spin while waiting steal the cores DataLoader workers and simulators need;
# set before torch is imported (a user's own setting wins).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"  # the one place the version is written: pyproject.toml reads it, `dp --version` prints it
