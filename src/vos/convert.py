"""``python -m vos.convert``: see `vos.cli.convert`."""

from vos.cli.convert import main

if __name__ == "__main__":
    main()
