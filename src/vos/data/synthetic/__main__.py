"""``python -m vos.data.synthetic``: the export command line of `vos.cli.export`."""

from vos.cli.export import main

if __name__ == "__main__":
    main()
