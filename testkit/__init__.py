"""What tests and benchmarks share, so neither imports the other: data builders and cases.

``factories``: ticks, Kinesis events, instruments and snapshots in the
service's public formats (generated, never committed). ``option_cases``:
reproducible option-pricing inputs. Never packaged, never imported by
runtime code.
"""
