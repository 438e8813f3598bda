import sys

from aliasd.cli import main

sys.exit(main())
