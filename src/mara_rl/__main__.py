import sys

from mara_rl.cli import main

sys.exit(main())
