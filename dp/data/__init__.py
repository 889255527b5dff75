"""dp.data"""
