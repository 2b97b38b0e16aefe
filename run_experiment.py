#!/usr/bin/env python
"""Run media-bias experiments from YAML configs: ``python run_experiment.py CONFIG.yaml``.

See ``python run_experiment.py --help`` and README.md.
"""

import sys

from backend.ml.cli import main

if __name__ == "__main__":
    sys.exit(main())
