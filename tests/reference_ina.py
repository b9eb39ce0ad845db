"""Reference outputs of inaSpeechSegmenter 0.6.8 (TensorFlow) for tests/test_cnn.py.

Run with the interpreter of a separate environment that has ``inaSpeechSegmenter==0.6.8``
(installed with --no-deps) and ``tensorflow-cpu`` (``SHAKELAB_REFERENCE_PYTHON``)::

    $SHAKELAB_REFERENCE_PYTHON tests/reference_ina.py OUT.npz clip1.wav [clip2.wav ...]

Each clip must be a 16 kHz mono WAV. For clip i it stores ``mspec_i`` (the reference log-mel
features), ``loge_i`` and ``probs_i`` (the network's raw per-patch softmax, one row per 20 ms,
from the reference's own patch builder and Keras model). The package's segmenter imports
pyannote.algorithms only for Viterbi decoding, which is not needed here, so it is stubbed.
"""

import os
import sys
import types

import numpy as np

if not hasattr(np, "int"):          # sidekit_mfcc uses numpy.int (removed in numpy 1.24)
    np.int = int

for name in ("pyannote", "pyannote.algorithms", "pyannote.algorithms.utils"):
    sys.modules.setdefault(name, types.ModuleType(name))
stub = types.ModuleType("pyannote.algorithms.utils.viterbi")
stub.viterbi_decoding = lambda *a, **k: None
sys.modules["pyannote.algorithms.utils.viterbi"] = stub
for name in ("pytextgrid", "pytextgrid.PraatTextGrid"):
    mod = types.ModuleType(name)
    mod.PraatTextGrid = mod.Interval = mod.Tier = object
    sys.modules.setdefault(name, mod)

from inaSpeechSegmenter import features, segmenter  # noqa: E402
from tensorflow import keras  # noqa: E402


def main(out, wavs):
    pkg = os.path.dirname(segmenter.__file__)
    nn = keras.models.load_model(os.path.join(pkg, "keras_speech_music_noise_cnn.hdf5"), compile=False)
    res = {}
    for i, wav in enumerate(wavs):
        mspec, loge, difflen = features._wav2feats(wav)
        patches, _finite = segmenter._get_patches(mspec[:, :21].copy(), 68, 2)
        if difflen > 0:
            patches = patches[:-int(difflen / 2)]
        res[f"mspec_{i}"] = mspec
        res[f"loge_{i}"] = loge
        res[f"probs_{i}"] = nn.predict(patches, batch_size=256, verbose=0)
    np.savez(out, **res)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
