"""``python -m vos.ablate``: see `vos.cli.ablate`."""

from vos.cli.ablate import main

if __name__ == "__main__":
    main()
