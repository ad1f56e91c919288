"""``python -m vos.eval``: see `vos.cli.eval`."""

from vos.cli.eval import main

if __name__ == "__main__":
    main()
