"""`python -m lddgan_core.recipes`, kept at its documented name; the code is in lddgan_core/tools/recipes.py."""
import sys

from .tools.recipes import main

if __name__ == "__main__":
    sys.exit(main())
