"""Fit the background-music cue (shakelab/server/bgm_cue.npz) on the devset's ``train`` split.

Usage (needs the CNN weights: ``shakelab models fetch``; and espeak-ng + fluidsynth +
timgm6mb-soundfont to build the split)::

    python data/train_bgm.py out/trainset            # builds the split there if missing

Per 20 ms step of every clip: the nine sustained-spectrum features of
:mod:`shakelab.server.bgm` and the CNN's log probabilities, averaged over 2 s; label 1 when
music is present (music alone, speech over music at -3..-25 dB), 0 otherwise (speech alone,
reverberant speech, speech in noise, noise, silence); steps without energy are left out.
L2-regularised logistic regression (scipy L-BFGS, C=0.1 as in scikit-learn's convention),
fitted on 80 % of the clips; the other 20 % are reported as validation. Deterministic.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shakelab import devset  # noqa: E402
from shakelab.server import bgm, cnn  # noqa: E402

C = 0.1


def collect(d: Path):
    import soundfile as sf

    rows = list(csv.DictReader(open(d / "manifest.csv")))
    model = cnn.load_model()
    if model is None:
        raise SystemExit("CNN weights missing: run `shakelab models fetch` first")
    X, Y, G, K = [], [], [], []
    for i, r in enumerate(rows):
        y, sr = sf.read(str(d / f"{r['name']}.wav"), dtype="float32")
        out = cnn.frame_outputs(y, sr, model=model)
        x = bgm.design(out.cue, out.probs)[out.active]
        lab = 1 if (d / f"{r['name']}.txt").read_text().strip() else 0
        X.append(x)
        Y.append(np.full(len(x), lab))
        G.append(np.full(len(x), i))
        K.append(np.array([r["condition"]] * len(x)))
    return np.concatenate(X), np.concatenate(Y), np.concatenate(G), np.concatenate(K)


def fit(x: np.ndarray, y: np.ndarray, c: float = C):
    n, d = x.shape

    def loss(w):
        z = x @ w[:d] + w[d]
        p = 1 / (1 + np.exp(-z))
        ll = np.sum(np.logaddexp(0, z) - y * z)
        g = x.T @ (p - y)
        return ll + w[:d] @ w[:d] / (2 * c), np.r_[g + w[:d] / c, np.sum(p - y)]

    res = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    return res.x[:d], float(res.x[d])


def main(argv: list[str]) -> int:
    d = Path(argv[0]) if argv else Path("out/trainset")
    if not (d / "manifest.csv").is_file():
        devset.build(d, split="train")
    x, y, g, k = collect(d)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    xs = (x - mean) / scale
    val = (g % 5) == 4
    coef, icpt = fit(xs[~val], y[~val])
    p = 1 / (1 + np.exp(-(xs[val] @ coef + icpt)))
    print("validation (held-out 20 % of clips), share of steps called music by the cue:")
    for cond in sorted(set(k[val])):
        m = k[val] == cond
        print(f"  {cond:20s} {np.mean(p[m] >= 0.5):.3f}")
    coef, icpt = fit(xs, y)       # final fit on all clips
    out = bgm.PARAMS_PATH
    np.savez(out, mean=mean, scale=scale, coef=coef, intercept=np.array(icpt),
             feature_names=np.array(bgm.FEATURE_NAMES))
    print(f"wrote {out} ({len(coef)} weights): " + ", ".join(f"{n}={w:+.2f}" for n, w in zip(bgm.FEATURE_NAMES, coef)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
