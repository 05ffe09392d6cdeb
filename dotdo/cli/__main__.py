"""`python -m dotdo.cli`."""

from dotdo.cli.app import main

main()
