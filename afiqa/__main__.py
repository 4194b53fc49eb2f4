import sys

from afiqa.cli import main

sys.exit(main())
