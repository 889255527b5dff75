"""Simulation: the task registry (``dp.sim.tasks``, robosuite tasks in MuJoCo and Push-T,
``dp.sim.pusht``) behind one task interface (``dp.sim.task_api``), scripted experts
(``dp.sim.experts``, on the waypoint machinery of ``dp.sim.waypoints``) and the seeded episode loop (``dp.sim.rollout``). Collection (`dp collect`)
lives in ``dp.collect`` and evaluation (`dp eval`) in ``dp.eval``.

Nothing here imports robosuite until an environment is made, so importing the package is cheap.
"""
