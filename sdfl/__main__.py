import sys

from sdfl.cli import main

sys.exit(main())
