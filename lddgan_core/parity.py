"""`python -m lddgan_core.parity`, kept at its documented name; the code is in lddgan_core/tools/parity.py."""
import sys

from .tools.parity import main

if __name__ == "__main__":
    sys.exit(main())
