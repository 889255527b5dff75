"""dp.models"""
