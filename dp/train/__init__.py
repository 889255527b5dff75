"""dp.train"""
