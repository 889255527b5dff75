"""dp.infer"""
