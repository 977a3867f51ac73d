"""`python -m lddgan_core.bench`, kept at its documented name; the code is in lddgan_core/tools/bench.py."""
import sys

from .tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
