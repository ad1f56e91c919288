"""``python -m vos.train_flow``: see `vos.cli.train_flow`."""

from vos.cli.train_flow import main

if __name__ == "__main__":
    main()
