"""Development scripts that users do not run: they build the demo recording and the development sets.

Run them from the repository root, e.g. ``python tools/make_demo.py --check`` or
``python -m tools.removalset out/removalset``; the tests and benchmarks import them as
``tools.<name>``. They are not part of the wheel.
"""
