import sys

from zvperf.cli import main

sys.exit(main())
