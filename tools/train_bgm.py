"""Fit the background-music cue (shakelab/server/bgm_cue.npz) and score it leave-one-source-out.

Usage (needs the CNN weights: ``shakelab models fetch``; and the Debian packages of
``make devset`` to build the ``broadcast`` split of :mod:`tools.devset`)::

    python tools/train_bgm.py [out/broadcast]          # LOSO report, then fit on all and write the .npz
    python tools/train_bgm.py --check [out/broadcast]  # is it the set of the record? refit and compare

Per 20 ms step of every clip: the nine sustained-spectrum features of
:mod:`shakelab.server.bgm` and the CNN's log probabilities, averaged over 2 s
(:func:`bgm.design`) and the CNN's last hidden layer (2-s means, reduced to ``K_EMBED``
principal components); label 1 when music is present (music alone, speech over music), 0
otherwise (speech through every chain, speech over noise beds, noise, silence); steps without
energy are left out, every 5th step is kept. ``RESTARTS`` networks with one hidden layer of
``HIDDEN`` tanh units and a logistic output (cross-entropy, L2 penalty ``L2``, scipy L-BFGS,
``ITERS`` iterations from seeds ``SEED``, ``SEED + 1``, ...), every clip weighing the same, their
logits averaged (:func:`fit_params`). Deterministic on one machine (one BLAS thread); on another
CPU, OpenBLAS picks another kernel and the last bits of every product move, so one network
lands in another optimum: the average of several moves far less.

What the weights were fitted on is recorded in ``tools/broadcast.sha256`` (:func:`write_record`:
the weights' sha256, this machine's inputs from :func:`tools.devset.input_fingerprint`, every
clip's from :func:`tools.devset.fingerprint`). ``--check`` first says whether the set (and the
machine's inputs) equal the record, naming the inputs, clips and sources that differ, then
refits and compares: it passes when the set is the recorded one and the refit is bit for bit
the committed file, or its music decision differs on at most ``FLIP_TOLERANCE`` of the steps.

Leave-one-source-out (:func:`loso_params`): a clip is scored by a decision fitted on the
clips that share none of its group's sources (speech source, music source, noise bed), so
every figure is on speakers, voices, songs and beds it never saw. Scored as the server computes
it (:func:`track`: every 20 ms step, energy gate, :func:`shakelab.server.cnn.hmm_smooth`). The
CNN's frame outputs (at the server's patch hop) are cached next to the set (``<set>.frames.npz``),
keyed by the clips' sizes and times, so re-running costs seconds.
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")       # one thread: the fit is reproducible to the last bit (--check)

import csv  # noqa: E402
import hashlib  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shakelab.ledger import file_sha256  # noqa: E402
from shakelab.server import bgm, cnn  # noqa: E402
from tools import devset  # noqa: E402

SUBSAMPLE = 5           # every 5th 20-ms step: the design is a 2-s average, neighbours are near copies
FRAMES_VERSION = "2"    # bump when cnn.frame_outputs or bgm.features change


def manifest(d: Path) -> list[dict]:
    """Read the set's ``manifest.csv``: one dict per clip."""
    with open(d / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def frame_table(d: Path) -> list[dict]:
    """Per clip: manifest row + ``probs`` (P, 3), ``active`` (P,), ``cue`` (P, 9), ``label``.

    Cached in ``<d>.frames.npz``; recomputed only when a clip changed.
    """
    import soundfile as sf

    rows = manifest(d)
    key = hashlib.sha256(f"{FRAMES_VERSION}:hop={cnn.PATCH_HOP}".encode())     # the server's patch hop
    for r in rows:
        st = (d / f"{r['name']}.wav").stat()
        key.update(f"{r['name']}:{st.st_size}:{st.st_mtime_ns};".encode())
    cache = d.parent / f"{d.name}.frames.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["key"]) == key.hexdigest():
                for i, r in enumerate(rows):
                    r.update(probs=z[f"p{i}"], active=z[f"a{i}"], cue=z[f"c{i}"], embed=z[f"e{i}"])
                return _labelled(d, rows)
    model = cnn.load_model()
    if model is None:
        raise SystemExit("CNN weights missing: run `shakelab models fetch` first")
    arrays = {"key": np.array(key.hexdigest())}
    for i, r in enumerate(rows):
        y, sr = sf.read(str(d / f"{r['name']}.wav"), dtype="float32")
        out = cnn.frame_outputs(y, sr, model=model, embed=True)
        emb = bgm.context(out.embed)[::SUBSAMPLE].astype(np.float16)   # 2-s means, every 100 ms
        r.update(probs=out.probs, active=out.active, cue=out.cue, embed=emb)
        arrays.update({f"p{i}": out.probs, f"a{i}": out.active, f"c{i}": out.cue, f"e{i}": emb})
    np.savez(cache, **arrays)
    return _labelled(d, rows)


def _labelled(d: Path, rows: list[dict]) -> list[dict]:
    for r in rows:
        r["label"] = 1 if (d / f"{r['name']}.txt").read_text().strip() else 0
        r["sources"] = {f"{k}:{r.get(k)}" for k in ("speech", "music", "bed") if r.get(k)}
    return rows


HIDDEN = 16            # tanh units of each network's hidden layer
L2 = 1.0               # penalty on the weights (not the biases)
ITERS = 200            # L-BFGS iterations
SEED = 0               # the start point
RESTARTS = 5           # networks from seeds SEED, SEED + 1, ...: their logits averaged (one layer of 5 x 16)


def fit(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, *, hidden: int = HIDDEN, l2: float = L2,
        iters: int = ITERS, seed: int = SEED) -> tuple[np.ndarray, ...]:
    """Weighted cross-entropy of a one-hidden-layer tanh network; returns ``(W1, b1, W2, b2)``."""
    n, d = x.shape
    w = np.ones(n) if w is None else w
    rng = np.random.default_rng(seed)
    v0 = np.r_[rng.standard_normal(d * hidden) / np.sqrt(d), np.zeros(hidden),
               rng.standard_normal(hidden) / np.sqrt(hidden), 0.0]

    def unpack(v):
        return v[:d * hidden].reshape(d, hidden), v[d * hidden:(d + 1) * hidden], v[(d + 1) * hidden:-1], v[-1]

    def loss(v):
        w1, b1, w2, b2 = unpack(v)
        h = np.tanh(x @ w1 + b1)
        z = h @ w2 + b2
        g = w * (1 / (1 + np.exp(-z)) - y)
        gh = np.outer(g, w2) * (1 - h * h)
        ll = np.sum(w * (np.logaddexp(0, z) - y * z)) + l2 / 2 * (np.sum(w1 * w1) + np.sum(w2 * w2))
        return ll, np.r_[(x.T @ gh + l2 * w1).ravel(), gh.sum(axis=0), h.T @ g + l2 * w2, g.sum()]

    res = minimize(loss, v0, jac=True, method="L-BFGS-B", options={"maxiter": iters})
    return unpack(res.x)


K_EMBED = 48           # principal components of the embedding the network sees


def design_rows(r: dict, *, every: int = SUBSAMPLE) -> np.ndarray:
    """Fuse one clip's design every ``every`` steps: 12 cue columns + 256 embedding (2-s means).

    The cache holds the embedding's 2-s means every ``SUBSAMPLE`` steps; ``every=1`` holds
    each of them for the ``SUBSAMPLE`` steps it stands for (the server's 20 ms grid).
    """
    cue = bgm.design(r["cue"], r["probs"])[::every]
    emb = r["embed"].astype(np.float64)
    if every != SUBSAMPLE:
        emb = np.repeat(emb, SUBSAMPLE, axis=0)[::every]
        emb = np.concatenate([emb, np.repeat(emb[-1:], max(0, len(cue) - len(emb)), axis=0)])[:len(cue)]
    return np.concatenate([cue, emb], axis=1)


def fit_params(table: list[dict], *, restarts: int | None = None) -> dict:
    """Fit the fused decision's standardisation and network on ``table``'s clips.

    The embedding is reduced to its first ``K_EMBED`` principal components (of the training
    rows) before the network; the projection is folded into its first layer. ``restarts``
    (default ``RESTARTS``) networks are fitted from seeds ``SEED``, ``SEED + 1``, ... and their logits averaged: one
    hidden layer of ``restarts * HIDDEN`` units (268 x 80), output weights divided by
    ``restarts``. One network alone lands in a different optimum for another seed or another
    BLAS kernel's rounding (weights up to 2.6 apart; leave-one-source-out noise 0.024 on one
    CPU, 0.064 on another); refitted under the Haswell, Sandybridge and Prescott kernels, the
    average of five gives a music decision that differs from the shipped one on 0.07-0.09 %
    of the broadcast split's active steps (README, "Detection quality").
    """
    X, Y, W = [], [], []
    for r in table:
        x = design_rows(r)[r["active"][::SUBSAMPLE]]
        if len(x):
            X.append(x)
            Y.append(np.full(len(x), r["label"], float))
            W.append(np.full(len(x), 1.0 / len(x)))     # every clip weighs the same
    x, y, w = np.concatenate(X), np.concatenate(Y), np.concatenate(W)
    w = w * len(w) / w.sum()
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    n = len(bgm.FEATURE_NAMES)
    proj = np.linalg.svd(z[::4, n:], full_matrices=False)[2][:K_EMBED].T       # (256, K)
    zk = np.concatenate([z[:, :n], z[:, n:] @ proj], axis=1)
    restarts = RESTARTS if restarts is None else restarts
    nets = [fit(zk, y, w, seed=SEED + k) for k in range(restarts)]
    w1 = np.concatenate([a for a, _, _, _ in nets], axis=1)
    return {"mean": mean, "scale": scale, "W1": np.concatenate([w1[:n], proj @ w1[n:]]),
            "b1": np.concatenate([b for _, b, _, _ in nets]),
            "W2": np.concatenate([c for _, _, c, _ in nets]) / restarts,
            "b2": np.array(np.mean([b for _, _, _, b in nets]))}


def folds(table: list[dict]) -> dict[tuple, list[int]]:
    """Clips grouped so that each group's sources can be held out together.

    Group (i, j): speech source i (or none) with music source j, or with noise bed j when the
    clip has no music (5 music sources, 5 beds); clips without a source are spread evenly.
    """
    out: dict[tuple, list[int]] = {}
    for n, r in enumerate(table):
        i = devset.SPEECH_SOURCES.index(r["speech"]) if r["speech"] else n % len(devset.SPEECH_SOURCES)
        if r["music"]:
            j = devset.MUSIC_SOURCES.index(r["music"])
        elif r["bed"] in devset.BEDS:
            j = devset.BEDS.index(r["bed"])
        else:
            j = n % len(devset.MUSIC_SOURCES)
        out.setdefault((i, j), []).append(n)
    return out


def loso_params(table: list[dict]) -> list[dict]:
    """For each clip, the decision fitted on the clips sharing no source with its group.

    A group holds out every source (speech, music, bed) of its clips, so each clip is scored
    by a model that never heard its speaker or voice, its song and its noise bed.
    """
    out: list[dict] = [{}] * len(table)
    for idx in folds(table).values():
        hold = set().union(*(table[n]["sources"] for n in idx))
        prm = fit_params([t for t in table if not (t["sources"] & hold)])
        for n in idx:
            out[n] = prm
    return out


def track(r: dict, prm: dict | None, *, hmm: bool = True) -> np.ndarray:
    """Compute one cached clip's music probability every 20 ms, as the server does.

    The fused decision (or the CNN alone when ``prm`` is None), the energy gate, then the
    HMM (or, without it, the 1-s mean: the CNN alone's smoothing on the server).
    """
    act = r["active"]
    if prm is None:
        p = np.nan_to_num(r["probs"][:, 1], nan=0.0).astype(np.float64)
    else:
        p = bgm.decide(design_rows(r, every=1), prm)
    p = np.where(act, p, 0.0)
    if hmm:
        return np.where(act, cnn.hmm_smooth(p), 0.0)
    from scipy.ndimage import uniform_filter1d

    return uniform_filter1d(p, size=round(1.0 / cnn.PRED_S), mode="nearest")


def score(table: list[dict], tracks: list[np.ndarray], *, by: str = "condition", window: float = 10.0,
          step: float = cnn.PRED_S):
    """Share of time called music per group, on the 10-ms grid and in the service's windows.

    Returns ``{group: (frame_share, window_share, seconds)}``. A frame is music when its
    probability is >= 0.5; a window when the local server's rule
    (:func:`shakelab.server.decision.window_scores`, presence semantics: the best 2-s mean in
    the window) says so. Every clip is homogeneous, so the share is recall for the music
    groups and the false-positive rate for the others.
    """
    from shakelab.server.decision import MUSIC_PROBABILITY, window_scores

    acc: dict[str, list[float]] = {}
    for r, p in zip(table, tracks, strict=True):
        wins = [w["confidence"] >= MUSIC_PROBABILITY for w in window_scores(step, p, float(r["duration"]),
                                                                             window=window)]
        a = acc.setdefault(r[by] or "-", [0.0, 0.0, 0.0, 0.0])
        a[0] += float(np.sum(p >= 0.5))
        a[1] += len(p)
        a[2] += float(np.sum(wins))
        a[3] += len(wins)
    return {g: (a[0] / a[1], a[2] / max(a[3], 1), a[1] * step) for g, a in sorted(acc.items())}


RECORD = Path(__file__).with_name("broadcast.sha256")   # the set the committed weights were fitted on


def write_record(d: Path, path: Path = RECORD, *, inputs: dict[str, str] | None = None) -> None:
    """Record what the weights were fitted on: the weights' sha256, this machine's inputs, every clip's.

    ``inputs`` defaults to :func:`tools.devset.input_fingerprint` (this machine's).
    """
    inputs = devset.input_fingerprint() if inputs is None else inputs
    lines = [f"# written by tools/train_bgm.py with {bgm.PARAMS_PATH.name}; read by --check",
             f"{file_sha256(bgm.PARAMS_PATH)}  weights {bgm.PARAMS_PATH.name}"]
    lines += [f"{h}  input {k}" for k, h in inputs.items()]
    lines += [f"{h}  clip {k}" for k, h in devset.fingerprint(d).items()]
    path.write_text("\n".join(lines) + "\n")


def read_record(path: Path = RECORD) -> dict[str, str]:
    """Read :func:`write_record`'s file: ``{"weights bgm_cue.npz": sha, "input flite": sha, "clip 000_x": sha}``."""
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            h, key = line.split("  ", 1)
            out[key] = h
    return out


def verify_set(d: Path, path: Path = RECORD, *, inputs: dict[str, str] | None = None) -> bool:
    """Say whether the set in ``d`` (and this machine's inputs) equal the ones the weights were fitted on.

    Prints the inputs and clips that differ, and the sources (speech, music, chain, bed) of the
    clips that differ; returns True when everything equals the record. ``inputs`` defaults to
    :func:`tools.devset.input_fingerprint` (this machine's).
    """
    if not path.is_file():
        print(f"{path} missing: nothing to compare the set with")
        return False
    rec = read_record(path)
    ok = True
    if rec.get(f"weights {bgm.PARAMS_PATH.name}") != file_sha256(bgm.PARAMS_PATH):
        print(f"{bgm.PARAMS_PATH.name} is not the file {path.name} was written with (refitted without the record?)")
        ok = False
    inputs = devset.input_fingerprint() if inputs is None else inputs
    now = {f"input {k}": h for k, h in inputs.items()}
    now.update({f"clip {k}": h for k, h in devset.fingerprint(d).items()})
    for kind in ("input", "clip"):
        keys = sorted({k for k in (*rec, *now) if k.startswith(kind + " ")})
        bad = [k[len(kind) + 1:] for k in keys if rec.get(k) != now.get(k)]
        if not bad:
            print(f"{kind}s: all {len(keys)} equal the record ({path.name})")
            continue
        ok = False
        print(f"{kind}s: {len(bad)} of {len(keys)} differ from the record ({path.name}): {', '.join(bad[:12])}"
              + (" ..." if len(bad) > 12 else ""))
        if kind == "clip":
            rows = {r["name"]: r for r in manifest(d)}
            for col in ("speech", "music", "chain", "bed"):
                count: dict[str, int] = {}
                for b in bad:
                    v = rows.get(b, {}).get(col)
                    if v:
                        count[v] = count.get(v, 0) + 1
                if count:
                    print(f"  differing clips by {col}: " + ", ".join(f"{k} {v}" for k, v in sorted(count.items())))
    return ok


FLIP_TOLERANCE = 0.002   # --check: share of steps whose decision may differ (other BLAS kernels: <= 0.09 %)


def decision_flips(table: list[dict], a: dict, b: dict) -> float:
    """Share of the active 20-ms steps of ``table`` where decisions ``a`` and ``b`` disagree (>= 0.5 or not)."""
    n = k = 0
    for r in table:
        pa, pb = track(r, a) >= 0.5, track(r, b) >= 0.5
        n += int(r["active"].sum())
        k += int(np.sum((pa != pb) & r["active"]))
    return k / max(n, 1)


def main(argv: list[str]) -> int:
    """Report leave-one-source-out, then fit on every clip and write the weights (``--check``: compare)."""
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    d = Path(args[0]) if args else Path("out/broadcast")
    if not (d / "manifest.csv").is_file():
        devset.build(d, split="broadcast")
    if check:
        old = bgm.params()
        if old is None:
            print(f"{bgm.PARAMS_PATH} missing")
            return 1
        same = verify_set(d)
        if not same:
            print("the set differs from the one the weights were fitted on: the refit below cannot be expected "
                  "to equal them (refit with `python tools/train_bgm.py` and commit both files, or build on a "
                  "machine whose inputs match)")
    table = frame_table(d)
    prm = fit_params(table)
    if check:
        diff = max(float(np.max(np.abs(prm[k] - old[k]))) if prm[k].shape == old[k].shape else np.inf for k in prm)
        print(f"refit vs committed {bgm.PARAMS_PATH.name}: max |difference| of the weights {diff:.2e}")
        flips = decision_flips(table, prm, old)
        print(f"refit vs committed: the music decision differs on {flips:.2%} of the set's active 20-ms steps "
              f"(tolerated: {FLIP_TOLERANCE:.2%}, for another BLAS/CPU kernel)")
        return 0 if same and (diff == 0 or flips <= FLIP_TOLERANCE) else 1
    tracks = [track(r, p) for r, p in zip(table, loso_params(table), strict=True)]
    print("leave-one-source-out, share of time called music (10 ms / 10-s windows):")
    for g, (f, w, sec) in score(table, tracks).items():
        print(f"  {g:18s} {f:.3f}  {w:.3f}  ({sec / 60:.1f} min)")
    np.savez(bgm.PARAMS_PATH, **prm, feature_names=np.array(bgm.FUSED_NAMES))
    write_record(d)
    print(f"wrote {bgm.PARAMS_PATH} ({sum(v.size for k, v in prm.items() if k[0] in 'Wb')} weights, "
          f"{RESTARTS} x {HIDDEN} hidden units) and {RECORD} (what it was fitted on)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
