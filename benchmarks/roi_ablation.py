"""The RoIAlign vs RoIPool ablation (paper Tables 2 and 6); the same as ``npmaskrcnn ablate``.

    python benchmarks/roi_ablation.py --quick   # 1 seed, FPN, RoIPool vs RoIAlign
    python benchmarks/roi_ablation.py           # Table 2c at stride 16, 3 seeds
    python benchmarks/roi_ablation.py --full    # Tables 2b, 2c, 2d, aligned=True, FPN and 6
    python benchmarks/roi_ablation.py --tables 6  # Table 6: keypoints, 3 seeds

See the ``npmaskrcnn/ablation/`` package for what is run and how the report is computed.
"""

import sys

from npmaskrcnn.ablation import main

if __name__ == "__main__":
    sys.exit(main())
