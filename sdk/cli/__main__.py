import sys

from gramcast.cli import main

sys.exit(main())
