"""`python -m gpt2.eval`: gpt2/eval/cli.py."""

import sys

from gpt2.eval.cli import main

sys.exit(main())
