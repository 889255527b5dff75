"""dp.diffusion"""
