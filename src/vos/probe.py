"""``python -m vos.probe``: see `vos.cli.probe`."""

from vos.cli.probe import main

if __name__ == "__main__":
    main()
