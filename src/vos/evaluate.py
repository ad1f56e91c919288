"""``python -m vos.evaluate``: see `vos.cli.evaluate`."""

from vos.cli.evaluate import main

if __name__ == "__main__":
    main()
