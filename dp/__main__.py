import sys

from dp.cli import main

sys.exit(main())
