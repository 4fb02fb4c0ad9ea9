"""`python -m retinacli ...` runs the `retina` command (used by torchrun)."""

from retinacli.cli import main

if __name__ == "__main__":
    main()
