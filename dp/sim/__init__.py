"""dp.sim"""
