"""Test session settings.

One intra-op thread: the test models are tiny, and on small shared machines several threads
per process oversubscribe the cores (tens of times slower), see docs/developer.md.
"""

import torch

torch.set_num_threads(1)
