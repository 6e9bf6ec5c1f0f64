"""The side-by-side benchmark's parts (benchmark/run.py runs them): one module per system
measured (a `raw`, b `ours`, c `seed`, d `plain`, e `bento`, and `noop`), the load levels and
CPU accounting (`load_levels`), the local Ray cluster (`cluster`), and the report (`report`).
"""
