import sys

from weights_convert.cli import main

sys.exit(main())
