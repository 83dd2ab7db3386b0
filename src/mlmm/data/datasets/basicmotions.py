"""UEA BasicMotions: smart-watch accelerometer and gyroscope series of four activities.

Source: the UEA multivariate time series classification archive (A. Bagnall et al., "The UEA
multivariate time series classification archive, 2018", arXiv:1811.00075). The copy shipped
with mlmm (``_files/basicmotions.npz``) was made from the ``.ts`` files in the aeon 1.6.0 wheel;
see ``_files/ATTRIBUTION.md``.
"""

from __future__ import annotations

import numpy as np

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.datasets._files import read_npz
from mlmm.data.datasets.registry import register_dataset
from mlmm.data.specs import ModalitySpec, TaskSpec

__all__ = ["BASICMOTIONS_CLASSES", "load_basicmotions"]

BASICMOTIONS_CLASSES = ("Standing", "Running", "Walking", "Badminton")
"""Class names in label order (the order of the ``.ts`` header)."""

_CITATION = (
    "A. Bagnall, H. A. Dau, J. Lines, M. Flynn, J. Large, A. Bostrom, P. Southam, E. Keogh, "
    '"The UEA multivariate time series classification archive, 2018", arXiv:1811.00075'
)
_SOURCE = (
    f"UEA multivariate time series classification archive; cite {_CITATION}; "
    "via the aeon 1.6.0 wheel"
)
_LICENSE = "not stated by the archive (public research data)"


@register_dataset(
    "basicmotions",
    description="UEA BasicMotions: 80 smart-watch series, 4 activities, accelerometer + gyroscope",
    source=_SOURCE,
    license=_LICENSE,
    modalities="acc, gyro",
    task="classification",
)
def load_basicmotions() -> MultimodalDataset:
    """Load UEA BasicMotions: accelerometer and gyroscope series, four activities.

    Four people performed four activities (Standing, Running, Walking, Badminton) wearing a
    smart watch that recorded a 3-D accelerometer and a 3-D gyroscope at 10 Hz for 10 s. Two
    sequence modalities of shape ``(100, 3)`` (time, axis): ``acc`` is channels 0-2 of the
    archive's files and ``gyro`` channels 3-5. That reading is the common one and the data
    agree with it (channels 3-5 have about zero mean in every class, 0-2 do not), but the
    source files do not document it: it is unverified.

    80 cases, 20 per class: the official TRAIN file (40 cases) then the official TEST file
    (40 cases), each ordered by class. ``meta["official_split"]`` says which file each row
    came from (``"train"``/``"test"``); use it to reproduce published numbers, or split with
    :mod:`mlmm.data.split`. So small a dataset suits smoke tests, not fine comparisons.

    Source: UEA multivariate time series classification archive; please cite A. Bagnall,
    H. A. Dau, J. Lines, M. Flynn, J. Large, A. Bostrom, P. Southam, E. Keogh, "The UEA
    multivariate time series classification archive, 2018", arXiv:1811.00075. The archive
    states no licence. The shipped copy was made from the ``.ts`` files in the aeon 1.6.0 wheel
    (float32, relative error below 6e-8); see ``mlmm/data/datasets/_files/ATTRIBUTION.md``.

    Returns
    -------
    MultimodalDataset
        Modalities ``acc`` and ``gyro`` (kind ``"sequence"``, shape ``(100, 3)``); four
        classes named as in :data:`BASICMOTIONS_CLASSES`; ``meta`` holds ``official_split``,
        the source, citation and the channel note.

    Examples
    --------
    >>> ds = load_basicmotions()
    >>> ds.n_samples, ds.spec("gyro").shape, ds.task.class_names[1]
    (80, (100, 3), 'Running')
    >>> int((ds.meta["official_split"] == "test").sum())
    40
    """
    arrays = read_npz("basicmotions.npz")
    official_split = np.where(arrays["is_test"].astype(bool), "test", "train")
    return MultimodalDataset(
        specs=[
            ModalitySpec("acc", "sequence", (100, 3)),
            ModalitySpec("gyro", "sequence", (100, 3)),
        ],
        task=TaskSpec("classification", len(BASICMOTIONS_CLASSES), BASICMOTIONS_CLASSES),
        inputs={"acc": arrays["acc"], "gyro": arrays["gyro"]},
        targets=arrays["labels"].astype(np.int64),
        name="basicmotions",
        meta={
            "official_split": official_split,
            "source": _SOURCE,
            "license": _LICENSE,
            "citation": _CITATION,
            "channels": (
                "acc = archive channels 0-2, gyro = channels 3-5 (common reading, unverified); "
                "10 Hz, 10 s"
            ),
        },
    )
