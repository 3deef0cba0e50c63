"""The evaluate stage in its parts (jobs/evaluate.py is its command line)."""
