"""A fake LeRobot (0.4.4's import surface as dp's LeRobot driver uses it) for dp's tests: an SO-101
follower that simulates its joints and cameras without hardware (``lerobot.robots.so_follower``)."""
