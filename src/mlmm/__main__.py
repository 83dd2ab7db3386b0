"""``python -m mlmm``: the ``mlmm`` command (torchrun starts it this way: ``torchrun ... -m mlmm``)."""

from mlmm.cli import main

if __name__ == "__main__":
    main()
