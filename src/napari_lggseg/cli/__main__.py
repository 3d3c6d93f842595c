"""``python -m napari_lggseg.cli`` (e.g. under torchrun) = ``lggseg``."""

from . import main

if __name__ == "__main__":
    raise SystemExit(main())
