"""Scaffolding for tests and benchmarks, kept out of the product path: processes and State watchers
for the deploy path (:mod:`dp.testing.robot_harness`), small spec-faithful foreign-format datasets
(:mod:`dp.testing.format_fixtures`) and a small synthetic reach/retreat store (:mod:`dp.testing.reach_store`).

Nothing in the product imports this package.
"""
