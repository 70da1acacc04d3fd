#!/usr/bin/env python
"""Raw data set -> the prepared format (the same command as ``dsm prepare``).

python data_scripts/prepare.py fer2013 --source archive.zip --out data/fer2013
python data_scripts/prepare.py synthetic --out data/synthetic
python data_scripts/prepare.py DATASET --help
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout without installing

from dsm.data.prepare import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
