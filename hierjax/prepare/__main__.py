"""`python -m hierjax.prepare DATASET --manual_dir=ARCHIVES --data_dir=TFDS_DIR`; see
`hierjax.prepare.main`."""

import sys

from hierjax.prepare import main

sys.exit(main())
