import sys

from scripts.gpu_check.check import main

sys.exit(main())
