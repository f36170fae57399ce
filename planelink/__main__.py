import sys

from planelink.cli import main

sys.exit(main())
