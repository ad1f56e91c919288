"""``python -m vos.train``: see `vos.cli.train`."""

from vos.cli.train import main

if __name__ == "__main__":
    main()
