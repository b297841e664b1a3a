import sys

from skipnas.cli import main

sys.exit(main())
