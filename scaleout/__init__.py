"""scaleout: two-tower retrieval with TensorFlow Recommenders, Ray Train and ScaNN.

TFRS 0.7 is written against Keras 2. TensorFlow 2.16+ resolves ``tf.keras`` to
Keras 3 unless ``TF_USE_LEGACY_KERAS=1`` is set before ``tf.keras`` is first
touched, so importing scaleout sets it (the one import-time side effect the
stack needs). Processes the project starts elsewhere (Ray workers) get it
through their runtime environment: see ``scaleout.tfenv.RUNTIME_ENV_VARS``.
"""

import os as _os

__version__ = "0.1.0"

_setting = _os.environ.get("TF_USE_LEGACY_KERAS")
if _setting not in (None, "", "1", "true", "True"):
    raise ImportError(
        f"TF_USE_LEGACY_KERAS={_setting!r} is set in the environment, but scaleout needs Keras 2 "
        "(tensorflow-recommenders 0.7 does not run on Keras 3). Unset it or set TF_USE_LEGACY_KERAS=1."
    )
_os.environ["TF_USE_LEGACY_KERAS"] = "1"
