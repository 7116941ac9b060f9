"""Benchmarks, apart from the tests: one `shareprice bench ...` command each, printing JSON.

Each measures on realistic data against a floor measured in the same run (a bare cursor, a bare
page, a plain COPY), because the machine is shared and only ratios and medians travel. Nothing in
the library imports this package; it may import anything in the library.
"""
