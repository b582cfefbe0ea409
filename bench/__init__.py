"""Benchmarks: one script per figure of the speed issue, each against a real server process.

Run `python -m bench.<name>` (`--smoke` for a one-second check); see bench/README.md.
"""
