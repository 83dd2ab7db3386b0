"""Loaders for the field's data-set file formats, one module per format.

Each loader reads files the user already has (``load_X(root, split=...)``) into a
:class:`~mlmm.data.MultimodalDataset`, marks the missingness that came with the data, and
keeps the official split. The readers they need (h5py, nibabel, Pillow) are the optional extra
``mlmm[formats]``, imported only when a loader runs, so ``import mlmm`` does not need them.
Importing this package registers the loaders in the dataset registry (``mlmm datasets``).
:func:`read_daphnet` reads Daphnet recordings for the ``daphnet`` stream instead (a stream,
not a dataset of samples: ``mlmm stream daphnet --stream-param path=FILE``).
"""

from mlmm.data.formats._common import CHECKSUMS, official_split
from mlmm.data.formats.avmnist import load_avmnist
from mlmm.data.formats.brats import load_brats
from mlmm.data.formats.daphnet import read_daphnet
from mlmm.data.formats.food101 import load_food101
from mlmm.data.formats.mmimdb import load_mmimdb
from mlmm.data.formats.mmin import load_iemocap
from mlmm.data.formats.mosi import load_mosei, load_mosi

__all__ = [
    "CHECKSUMS",
    "load_avmnist",
    "load_brats",
    "load_food101",
    "load_iemocap",
    "load_mmimdb",
    "load_mosei",
    "load_mosi",
    "official_split",
    "read_daphnet",
]
