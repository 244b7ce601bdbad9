"""``python -m nasreg``: the command line (also what ``torchrun -m nasreg run SPEC`` starts)."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="nasreg")
