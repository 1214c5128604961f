import sys

from runtime.engine.native import main

sys.exit(main())
