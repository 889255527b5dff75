"""Demonstration collection (`dp collect`) into an episode store: the scripted-expert and teleop
collector in simulation (:mod:`dp.collect.collector`, :mod:`dp.collect.teleop`) and the recorder of a
running robot controller's States and executed commands (:mod:`dp.collect.recorder`).

Imports :mod:`dp.sim`, :mod:`dp.data` and :mod:`dp.link`; nothing from training or deployment.
"""
