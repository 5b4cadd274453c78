"""`python -m twinvae ...` is the `twinvae` command (torchrun: `torchrun --nproc-per-node N -m twinvae train
--backend torch ...`)."""

import sys

from twinvae.cli import main

if __name__ == "__main__":
    sys.exit(main())
