"""Development tools users do not run: the detector's dev sets and the fits of its weights.

``python -m tools.devset OUT [--split dev|broadcast]`` (``make devset``),
``python tools/train_bgm.py`` (the fused music decision, ``shakelab/server/bgm_cue.npz``) and
``python tools/fit_detector.py`` (the feature-based detector, ``music_features.json``), run
from a checkout of the repository; not part of the installed package.
"""
