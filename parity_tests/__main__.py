"""`python -m parity_tests ...`: the parity table of every standard case, the same as `twinvae parity`."""

import sys

from twinvae.parity.cli import main

if __name__ == "__main__":
    sys.exit(main())
