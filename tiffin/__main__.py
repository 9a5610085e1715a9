"""`python -m tiffin` is the `tiffin` command (DDP launchers re-run it this way)."""

from tiffin.cli import main

if __name__ == "__main__":
    main()
