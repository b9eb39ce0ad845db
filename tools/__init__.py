"""Development scripts users do not run: the demo, the development sets, the detector's fits.

Run them from a checkout of the repository root, not from the installed package (they are not
in the wheel); the tests and benchmarks import them as ``tools.<name>``:

- ``python tools/make_demo.py --check``: the demo recording ``data/demo.flac`` and its labels;
- ``python -m tools.devset OUT [--split dev|broadcast]`` (``make devset``): the detector's dev sets;
- ``python -m tools.removalset OUT``: the music-removal dev set;
- ``python tools/train_bgm.py`` (the fused music decision, ``shakelab/server/bgm_cue.npz``) and
  ``python tools/fit_detector.py`` (the feature-based detector, ``music_features.json``).
"""
