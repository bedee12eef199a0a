"""The RoIAlign vs RoIPool ablation (paper Table 2); the same as ``npmaskrcnn ablate``.

    python benchmarks/roi_ablation.py --quick   # 1 seed, FPN, RoIPool vs RoIAlign
    python benchmarks/roi_ablation.py           # Table 2c at stride 16, 3 seeds
    python benchmarks/roi_ablation.py --full    # Tables 2b, 2c, 2d, aligned=True and FPN

See the ``npmaskrcnn/ablation/`` package for what is run and how the report is computed.
"""

import sys

from npmaskrcnn.ablation import main

if __name__ == "__main__":
    sys.exit(main())
