"""The results page and the README's Results section, built by `python bench/report.py`."""
