"""Policy evaluation in simulation (`dp eval`): seeded rollouts on the val/test seed splits and the
figures they give (:mod:`dp.eval.evaluate`), the command (:mod:`dp.eval.eval_cmd`), and the offline
analysis of RTI warm starts against demonstrations (:mod:`dp.eval.warm_starts`).

Evaluation sits at the end of the path and may import any stage.
"""
