"""dp.deploy"""
