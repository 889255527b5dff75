"""MuJoCo simulation through robosuite: the task registry (``dp.sim.tasks``), scripted experts
(``dp.sim.experts``), the demonstration collector (``dp.sim.collector``, `dp collect`), teleoperation
(``dp.sim.teleop``) and policy evaluation (``dp.sim.evaluate``, `dp eval`).

Nothing here imports robosuite until an environment is made, so importing the package is cheap.
"""
